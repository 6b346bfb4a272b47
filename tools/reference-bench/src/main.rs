//! The reference side of docs/BENCHMARKS.md: the same closed-loop load as `kv-cli bench`
//! (N clients, each with one request in flight, uniform keys, 16-byte values), aimed at etcd
//! (put, linearizable get) or Redis (SET followed by WAIT in one round trip, GET).
//!
//! Kept out of the kv package on purpose: it pulls in gRPC and a Redis client, which the
//! store itself does not need.

use clap::Parser;
use hdrhistogram::Histogram;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Workload {
    /// etcd Put (every put is committed by a quorum and fsynced).
    EtcdPut,
    /// etcd Range of one key (linearizable, etcd's default).
    EtcdGet,
    /// Redis SET, then WAIT <replicas> 0, pipelined in one round trip.
    RedisSetWait,
    /// Redis GET.
    RedisGet,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(value_enum)]
    workload: Workload,
    /// Server addresses (host:port), used by clients in turn.
    #[arg(long, value_delimiter = ',', required = true)]
    addr: Vec<String>,
    #[arg(long, default_value_t = 50)]
    clients: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, default_value_t = 100_000)]
    keyspace: u64,
    #[arg(long, default_value_t = 16)]
    value_size: usize,
    /// Replicas WAIT asks for (redis-set-wait).
    #[arg(long, default_value_t = 2)]
    replicas: u32,
}

struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = Args::parse();
    let until = Instant::now() + Duration::from_secs(args.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..args.clients {
        let addr = args.addr[i % args.addr.len()].clone();
        let (workload, keyspace, value, replicas) =
            (args.workload, args.keyspace, vec![b'x'; args.value_size], args.replicas);
        tasks.push(tokio::spawn(async move {
            drive(workload, addr, keyspace, value, replicas, until, i as u64).await
        }));
    }
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        let tally = task.await.unwrap();
        latency.add(&tally.latency).unwrap();
        ok += tally.ok;
        errors += tally.errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| latency.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "{:?}: {} clients, {} OK, {} errors in {:.2} s: {:.0} requests/s; latency ms p50 {:.3} p90 {:.3} p99 {:.3} p99.9 {:.3} max {:.3}",
        args.workload,
        args.clients,
        ok,
        errors,
        seconds,
        (ok + errors) as f64 / seconds,
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        latency.max() as f64 / 1000.0
    );
}

async fn drive(
    workload: Workload,
    addr: String,
    keyspace: u64,
    value: Vec<u8>,
    replicas: u32,
    until: Instant,
    seed: u64,
) -> Tally {
    let mut tally =
        Tally { latency: Histogram::new_with_bounds(1, 60_000_000, 3).unwrap(), ok: 0, errors: 0 };
    let mut rng = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let mut next_key = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        format!("key:{:06}", rng % keyspace)
    };
    match workload {
        Workload::EtcdPut | Workload::EtcdGet => {
            let mut client = etcd_client::Client::connect([format!("http://{addr}")], None).await.unwrap();
            while Instant::now() < until {
                let key = next_key();
                let t0 = Instant::now();
                let result = match workload {
                    Workload::EtcdPut => client.put(key, value.clone(), None).await.map(|_| ()),
                    _ => client.get(key, None).await.map(|_| ()),
                };
                record(&mut tally, t0, result.is_ok());
            }
        }
        Workload::RedisSetWait | Workload::RedisGet => {
            let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            while Instant::now() < until {
                let key = next_key();
                let t0 = Instant::now();
                let result: redis::RedisResult<()> = match workload {
                    Workload::RedisSetWait => {
                        let mut pipe = redis::pipe();
                        pipe.cmd("SET").arg(&key).arg(&value).ignore();
                        pipe.cmd("WAIT").arg(replicas).arg(0);
                        pipe.query_async::<(i64,)>(&mut conn).await.and_then(|(acked,)| {
                            if acked >= replicas as i64 {
                                Ok(())
                            } else {
                                Err(redis::RedisError::from((redis::ErrorKind::Client, "too few replicas")))
                            }
                        })
                    }
                    _ => redis::cmd("GET")
                        .arg(&key)
                        .query_async::<Option<Vec<u8>>>(&mut conn)
                        .await
                        .map(|_| ()),
                };
                record(&mut tally, t0, result.is_ok());
            }
        }
    }
    tally
}

fn record(tally: &mut Tally, t0: Instant, ok: bool) {
    tally.latency.saturating_record((t0.elapsed().as_micros() as u64).max(1));
    if ok {
        tally.ok += 1;
    } else {
        tally.errors += 1;
    }
}
