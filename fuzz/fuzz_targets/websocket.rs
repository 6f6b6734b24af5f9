#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::websocket::fuzzing::fuzz_websocket(data));
