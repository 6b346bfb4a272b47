//! The Raft log's durable append: batches of SET entries handed to `RaftLogStorage::append`, as
//! openraft hands them, each timed until its flush callback says it is on disk (one write to the
//! entries file and one `fdatasync`). Batches of 1 and 16 entries, 16-byte values.
//!
//! What this measures is mostly the disk's sync, so run it on the machine whose numbers matter,
//! and compare runs made one after the other.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kv::command::Write;
use kv::raft::TypeConfig;
use kv::raft::log_store::LogStore;
use openraft::entry::RaftEntry;
use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::type_config::TypeConfigExt;

fn entry(index: u64) -> <TypeConfig as openraft::RaftTypeConfig>::Entry {
    let write = Write::set(format!("key:{:06}", index % 100_000), vec![b'x'; 16]);
    RaftEntry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), write)
}

fn log_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut log = LogStore::open(dir.path()).unwrap();
    let mut next = 1;
    let mut group = c.benchmark_group("log append");
    for size in [1u64, 16] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("batch of {size} SETs, synced"), |b| {
            b.iter_batched(
                || {
                    let batch: Vec<_> = (next..next + size).map(entry).collect();
                    next += size;
                    batch
                },
                |batch| {
                    runtime.block_on(async {
                        let (tx, flushed) = TypeConfig::oneshot();
                        log.append(batch, IOFlushed::signal(tx)).await.unwrap();
                        flushed.await.unwrap().unwrap();
                    })
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, log_append);
criterion_main!(benches);
