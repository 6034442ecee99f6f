//! Criterion benchmarks for the room engine: one message, join+leave churn, history replay.
//!
//! Every iteration follows the drive contract: one `handle`, then `poll_output` until `None`
//! (the outputs are dropped, as a shell would after writing them).
//!
//! Run with `cargo bench -p chat-core`; one bench with e.g. `cargo bench -p chat-core -- churn`.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use chat_core::{ConnId, Input, Room, RoomConfig};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// 64 bytes of plain text, not starting with `/`.
const TEXT: &str = "The quick brown fox jumps over the lazy dog, then naps in the su";

/// Room sizes for the message benchmark.
const SIZES: [u64; 3] = [10, 1_000, 100_000];

/// Hands every queued output to `black_box` and drops it; returns how many there were.
fn drain(room: &mut Room) -> usize {
    let mut n = 0;
    while let Some(out) = room.poll_output() {
        black_box(out);
        n += 1;
    }
    n
}

/// A room with members `ConnId(0..n)` named `m0`, `m1`, ... Joins resume from the current
/// seq, so setup replays no history and stays fast even for 100 000 members.
fn room_with(config: RoomConfig, n: u64) -> Room {
    let mut room = Room::new(config, 1);
    for i in 0..n {
        let nick = format!("m{i}");
        let input = Input::Join {
            conn: ConnId(i),
            nick: Some(&nick),
            resume_after: Some(room.last_seq()),
        };
        room.handle(0, input).expect("setup join");
        drain(&mut room);
    }
    assert_eq!(room.member_count() as u64, n);
    room
}

/// `handle(Message)` + drain, from rotating members, in rooms of 10, 1 000 and 100 000.
fn message(c: &mut Criterion) {
    let config = RoomConfig {
        rate_limit: None,
        ..RoomConfig::default()
    };
    let mut group = c.benchmark_group("message");
    group.throughput(Throughput::Elements(1));
    for size in SIZES {
        // Built once per size, outside the measured routine (criterion calls the routine
        // once per sample), then reused by every iteration.
        let mut room = room_with(config.clone(), size);
        let mut next = 0u64;
        group.bench_function(BenchmarkId::new("members", size), |b| {
            b.iter(|| {
                let conn = ConnId(next);
                next = if next + 1 == size { 0 } else { next + 1 };
                let result = room.handle(0, Input::Message { conn, text: TEXT });
                debug_assert!(result.is_ok());
                drain(&mut room)
            })
        });
    }
    group.finish();
}

/// One join of a fresh connection (random nick, welcome, full history replay, join notice)
/// plus the leave of the oldest member, in a room of 1 000, default config.
fn churn(c: &mut Criterion) {
    let mut room = room_with(RoomConfig::default(), 1_000);
    let mut members: VecDeque<ConnId> = (0..1_000).map(ConnId).collect();
    let mut fresh = 1_000_000u64;
    c.bench_function("churn/join_leave_1000", |b| {
        b.iter(|| {
            let conn = ConnId(fresh);
            fresh += 1;
            let join = Input::Join {
                conn,
                nick: None,
                resume_after: None,
            };
            let _ = room.handle(0, join);
            let mut n = drain(&mut room);
            members.push_back(conn);
            if let Some(oldest) = members.pop_front() {
                let _ = room.handle(0, Input::Leave { conn: oldest });
                n += drain(&mut room);
            }
            n
        })
    });
}

/// A join resuming exactly 100 events back (history = 100), then its leave, in a room of 10.
fn replay(c: &mut Criterion) {
    const EVENTS: u64 = 100;
    let config = RoomConfig {
        rate_limit: None,
        ..RoomConfig::default()
    };
    let mut room = room_with(config, 10);
    for i in 0..EVENTS {
        room.handle(
            0,
            Input::Message {
                conn: ConnId(i % 10),
                text: TEXT,
            },
        )
        .expect("fill history");
        drain(&mut room);
    }
    let joiner = ConnId(1_000);
    let join_leave = |room: &mut Room| {
        let join = Input::Join {
            conn: joiner,
            nick: None,
            resume_after: Some(room.last_seq() - EVENTS),
        };
        let _ = room.handle(0, join);
        let mut replayed = 0;
        while let Some(out) = room.poll_output() {
            replayed += usize::from(out.is_replay());
            black_box(out);
        }
        let _ = room.handle(0, Input::Leave { conn: joiner });
        drain(room);
        replayed
    };
    // The join notice and the leave become history too, so history always holds 100 events.
    for _ in 0..3 {
        assert_eq!(join_leave(&mut room), EVENTS as usize);
    }
    c.bench_function("history/replay_100", |b| b.iter(|| join_leave(&mut room)));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(60);
    targets = message, churn, replay
}
criterion_main!(benches);
