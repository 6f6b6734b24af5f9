#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::testing::fuzz_stream_log(data));
