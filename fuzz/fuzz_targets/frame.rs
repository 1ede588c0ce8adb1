#![no_main]
// `tern_net::fuzz::frame`: what it feeds and what it checks is documented there.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tern_net::fuzz::frame(data));
