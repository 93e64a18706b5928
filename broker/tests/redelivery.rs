//! At-least-once on the wire, exactly-once in the copy: a consumer that disconnects at random points and
//! reconnects from its committed offset ends with every offset exactly once, in order.

mod common;

use client::Event;
use common::{Groups, TestBroker, WAIT, records_of, start};
use protocol::frame::StartPosition;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const TOTAL: u64 = 100_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_disconnects_lose_and_duplicate_nothing() {
    let broker = TestBroker::start().await;
    let answer = broker.inject("feed", TOTAL, 16).await;
    assert_eq!(answer["last_offset"], TOTAL - 1);

    let mut rng = StdRng::seed_from_u64(7);
    // The consumer's own copy: offsets in arrival order after de-duplication.
    let mut copy: Vec<u64> = Vec::with_capacity(TOTAL as usize);
    let mut redelivered = 0u64;
    let mut connections = 0u32;
    let deadline = tokio::time::Instant::now() + WAIT * 4;
    while (copy.len() as u64) < TOTAL {
        assert!(tokio::time::Instant::now() < deadline, "did not finish in time");
        connections += 1;
        assert!(connections < 1000, "too many reconnects");
        let (mut consumer, welcome) =
            // Small batches, so that a run holds many disconnects.
            broker
                .consumer_with("copy", vec![start("feed", StartPosition::Committed)], |config| {
                    config.batch_max_records = 10;
                })
                .await;
        assert!(welcome.topics[0].start_at <= copy.len() as u64, "the broker skipped ahead of the copy");
        // Disconnect after a random number of batches, sometimes before acknowledging the last one.
        let batches_before_drop = rng.random_range(1..2_000u32);
        let ack_last = rng.random_bool(0.5);
        for n in 0..batches_before_drop {
            let event = tokio::time::timeout(WAIT, consumer.next_event()).await.unwrap().unwrap();
            let Event::Batch(batch) = event else { panic!("unexpected {event:?}") };
            for record in records_of(&batch) {
                let next = copy.len() as u64;
                if record.offset < next {
                    redelivered += 1;
                } else {
                    assert_eq!(record.offset, next, "gap or reordering");
                    copy.push(record.offset);
                }
            }
            if n + 1 < batches_before_drop || ack_last {
                consumer.ack("feed", batch.last_offset + 1).await.unwrap();
            }
            if copy.len() as u64 == TOTAL {
                break;
            }
        }
        drop(consumer);
    }
    assert!(copy.iter().copied().eq(0..TOTAL));
    println!("{connections} connections, {redelivered} records redelivered and dropped by offset");
    assert!(connections > 1, "the test never disconnected");
    broker.stop().await;
}
