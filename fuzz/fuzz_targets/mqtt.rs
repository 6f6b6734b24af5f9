#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| warren::mqtt::codec::fuzzing::fuzz_mqtt(data));
