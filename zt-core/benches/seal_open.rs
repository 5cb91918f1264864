//! Transport encryption cost: seal + open of one packet (the session's AEAD, plus the
//! replay window), for a 1400-byte, a 2800-byte and a 9000-byte payload, with each of the
//! two transport ciphers.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng as _;
use zt_core::session::{initiate, respond};
use zt_core::SecretIdentity;

fn seal_open(c: &mut Criterion) {
    let a = SecretIdentity::generate(&mut ChaCha8Rng::seed_from_u64(1));
    let b = SecretIdentity::generate(&mut ChaCha8Rng::seed_from_u64(2));
    let now = Instant::now();
    for aes in [false, true] {
        let (hs, m1) = initiate(&a, b.public(), [1; 32], 1).unwrap();
        let r = respond(&b, a.address(), &m1, [2; 32], 2, 1, (aes, aes), now).unwrap();
        let mut tx = hs.finish(2, &r.msg2, aes, now).unwrap();
        let mut rx = r.session;
        let mut group = c.benchmark_group(format!("seal+open, {}", tx.cipher()));
        for size in [1400usize, 2800, 9000] {
            let payload = vec![0x5a; size];
            group.throughput(Throughput::Bytes(size as u64));
            group.bench_function(format!("{size} bytes"), |bench| {
                bench.iter(|| {
                    let (counter, ct) = tx.seal(black_box(&payload)).unwrap();
                    black_box(rx.open(counter, &ct).unwrap());
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, seal_open);
criterion_main!(benches);
