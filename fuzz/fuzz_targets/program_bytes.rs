#![no_main]

// What the supervisor reads out of the wrapped program's memory: sockaddrs, msghdr,
// timeval, control messages, netlink requests, iovecs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    supervisor::fuzz_program_bytes(data);
});
