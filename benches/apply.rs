//! The state machine's apply path: committed SET entries applied to redb through the same
//! `RaftStateMachine::apply` openraft calls, in batches of 1 and 64 entries (one transaction
//! each), with a table that already holds 100,000 keys.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kv::command::Write;
use kv::raft::TypeConfig;
use kv::raft::state_machine::StateMachine;
use kv::store::Store;
use openraft::entry::RaftEntry;
use openraft::storage::{EntryResponder, RaftStateMachine};
use std::sync::Arc;

const KEYSPACE: u64 = 100_000;

fn entry(index: u64) -> EntryResponder<TypeConfig> {
    let write = Write::set(format!("key:{:06}", index % KEYSPACE), vec![b'x'; 16]);
    (openraft::Entry::new_normal(openraft::testing::log_id::<TypeConfig>(1, 1, index), write), None)
}

fn apply(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachine::open(Arc::new(Store::open(dir.path()).unwrap()), 10_000).unwrap();
    let mut next = 1;
    // Fill the key space first, so that the B-tree has its working size.
    runtime.block_on(async {
        while next <= KEYSPACE {
            let batch: Vec<_> = (next..next + 1000).map(|i| Ok(entry(i))).collect();
            sm.apply(futures::stream::iter(batch)).await.unwrap();
            next += 1000;
        }
    });
    let mut group = c.benchmark_group("apply");
    for size in [1u64, 64] {
        group.throughput(Throughput::Elements(size));
        group.bench_function(format!("batch of {size} SETs"), |b| {
            b.iter_batched(
                || {
                    let batch: Vec<_> = (next..next + size).map(|i| Ok(entry(i))).collect();
                    next += size;
                    batch
                },
                |batch| runtime.block_on(sm.apply(futures::stream::iter(batch))).unwrap(),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, apply);
criterion_main!(benches);
