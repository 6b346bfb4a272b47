//! The wire codec: MessagePack payloads inside u32-length-prefixed frames, for the messages of the
//! write path (a SET request and its answer) and for a pipelined burst of 64 frames.

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kv::protocol::frame::{self, DEFAULT_MAX_FRAME_BYTES};
use kv::protocol::message::{Reply, Request, Response};
use serde_bytes::ByteBuf;
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

fn set_request(id: u64) -> Request {
    let args =
        vec![ByteBuf::from("SET"), ByteBuf::from(format!("key:{id:06}")), ByteBuf::from(vec![b'x'; 16])];
    Request::new(id, args)
}

fn messages(c: &mut Criterion) {
    let request = set_request(42);
    let encoded = frame::encode(&request);
    let response = Response::new(42, Reply::ok());
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    group.bench_function("encode SET request", |b| b.iter(|| frame::encode(black_box(&request))));
    group.bench_function("decode SET request", |b| {
        b.iter(|| frame::decode::<Request>(black_box(&encoded)).unwrap())
    });
    group.bench_function("encode OK response", |b| b.iter(|| frame::encode(black_box(&response))));
    group.finish();
}

fn frames(c: &mut Criterion) {
    const BURST: u64 = 64;
    let payloads: Vec<Bytes> = (0..BURST).map(|i| frame::encode(&set_request(i))).collect();
    let mut group = c.benchmark_group("frames");
    group.throughput(Throughput::Elements(BURST));
    group.bench_function("frame and unframe a burst of 64 SETs", |b| {
        let mut codec = frame::codec(DEFAULT_MAX_FRAME_BYTES);
        let mut buf = BytesMut::with_capacity(8 * 1024);
        b.iter(|| {
            for payload in &payloads {
                codec.encode(payload.clone(), &mut buf).unwrap();
            }
            let mut decoded = 0;
            while let Some(payload) = codec.decode(&mut buf).unwrap() {
                black_box(frame::decode::<Request>(&payload).unwrap());
                decoded += 1;
            }
            assert_eq!(decoded, BURST);
        })
    });
    group.finish();
}

criterion_group!(benches, messages, frames);
criterion_main!(benches);
