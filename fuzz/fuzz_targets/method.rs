#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::codec::fuzzing::method(data));
