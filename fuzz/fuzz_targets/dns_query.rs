#![no_main]

// A DNS query from the wrapped program to the supervisor's resolver.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    supervisor::dns::fuzz_answer(data);
});
