//! A connection's bounded outbound queue of ready-made WebSocket frames.
//!
//! Why not `tokio::sync::mpsc`: its bounded channel allocates a 32-slot block per channel up
//! front (~1.8 KiB with tungstenite messages) and keeps it, which dominated the memory of an
//! idle connection. This queue allocates only while frames wait, and the writer takes the
//! whole backlog in one step (one lock per batch on its side, one per frame on the room's).

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::task::Poll;

/// Why a frame was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity: the connection is not keeping up.
    Full,
    /// The connection is closing.
    Closed,
}

struct Queue {
    frames: VecDeque<Bytes>,
    closed: bool,
}

/// A bounded single-consumer queue of frames: the room pushes, the connection's writer takes.
pub struct Outbox {
    queue: Mutex<Queue>,
    capacity: usize,
    waker: AtomicWaker,
}

impl Outbox {
    /// An empty queue that holds at most `capacity` frames (at least 1).
    pub fn new(capacity: usize) -> Outbox {
        Outbox {
            queue: Mutex::new(Queue {
                frames: VecDeque::new(),
                closed: false,
            }),
            capacity: capacity.max(1),
            waker: AtomicWaker::new(),
        }
    }

    /// Queues a frame without waiting.
    pub fn push(&self, frame: Bytes) -> Result<(), PushError> {
        let mut queue = self.queue.lock();
        if queue.closed {
            return Err(PushError::Closed);
        }
        if queue.frames.len() >= self.capacity {
            return Err(PushError::Full);
        }
        queue.frames.push_back(frame);
        let first = queue.frames.len() == 1;
        drop(queue);
        // The writer drains everything it finds, so only the first frame needs to wake it.
        if first {
            self.waker.wake();
        }
        Ok(())
    }

    /// Waits for frames and moves all of them into `into` (which must be empty); returns how
    /// many, or 0 once the queue is closed and empty.
    pub async fn take_all(&self, into: &mut VecDeque<Bytes>) -> usize {
        debug_assert!(into.is_empty());
        poll_fn(|cx| {
            // Registering before looking means a push after the look still wakes us.
            self.waker.register(cx.waker());
            let mut queue = self.queue.lock();
            if queue.frames.is_empty() {
                return if queue.closed {
                    Poll::Ready(0)
                } else {
                    Poll::Pending
                };
            }
            // Swapping leaves the queue unallocated; the writer frees the batch when done.
            std::mem::swap(&mut queue.frames, into);
            Poll::Ready(into.len())
        })
        .await
    }

    /// Refuses further frames and drops waiting ones.
    pub fn close(&self) {
        let mut queue = self.queue.lock();
        queue.closed = true;
        queue.frames = VecDeque::new();
        drop(queue);
        self.waker.wake();
    }

    /// Frames waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.queue.lock().frames.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_fifo_that_closes() {
        let outbox = Outbox::new(2);
        assert_eq!(outbox.push(Bytes::from_static(b"a")), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"b")), Ok(()));
        assert_eq!(outbox.push(Bytes::from_static(b"c")), Err(PushError::Full));
        let mut batch = VecDeque::new();
        assert_eq!(outbox.take_all(&mut batch).await, 2);
        assert_eq!(batch, [b"a", b"b"].map(|b| Bytes::from_static(b)));
        assert_eq!(outbox.len(), 0);
        assert_eq!(outbox.push(Bytes::from_static(b"d")), Ok(()), "room again");
        outbox.close();
        assert_eq!(
            outbox.push(Bytes::from_static(b"e")),
            Err(PushError::Closed)
        );
        let mut batch = VecDeque::new();
        assert_eq!(
            outbox.take_all(&mut batch).await,
            0,
            "closed drops the rest"
        );
    }

    #[tokio::test]
    async fn a_push_wakes_the_waiting_writer() {
        let outbox = std::sync::Arc::new(Outbox::new(8));
        let writer = {
            let outbox = outbox.clone();
            tokio::spawn(async move {
                let mut batch = VecDeque::new();
                outbox.take_all(&mut batch).await
            })
        };
        tokio::task::yield_now().await;
        outbox.push(Bytes::from_static(b"x")).unwrap();
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), writer)
            .await
            .expect("woken")
            .unwrap();
        assert_eq!(n, 1);
    }
}
