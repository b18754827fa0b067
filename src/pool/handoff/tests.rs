//! Tests of the hand-off slot and of requests sent on ahead: delivery, give-ups, parameter checks, racing clients.

use super::HandOff;
use crate::params::Tracked;
use crate::pool::Pool;
use crate::server::ServerConn;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A pool of `size` with `idle` adopted servers (socket pairs; the peers are returned).
fn pool(size: usize, idle: usize) -> (Arc<Pool>, Vec<tokio::net::UnixStream>) {
    crate::pool::fixture::socketpair_pool(size, idle, Duration::from_secs(60))
}

/// A queued-capable checkout on `slot` (no request to send on ahead).
async fn wait_on(
    p: &Arc<Pool>,
    slot: &Arc<HandOff>,
) -> Result<ServerConn, crate::pool::CheckoutError> {
    p.checkout_via(Some(slot), crate::clock::now_us(), &mut None)
        .await
}

fn poll_once<F: Future>(f: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    f.poll(&mut Context::from_waker(Waker::noop()))
}

/// (active, idle, waiting)
fn counts(p: &Pool) -> (usize, usize, usize) {
    let (a, i, _, w) = p.counts();
    (a, i, w)
}

#[tokio::test]
async fn queued_waits_are_served_in_order_and_a_given_up_wait_leaves_the_queue() {
    let (p, _peers) = pool(1, 1);
    let held = p.checkout().await.unwrap();
    let (b_slot, c_slot) = (HandOff::new(), HandOff::new());
    let mut b = Box::pin(wait_on(&p, &b_slot));
    let mut c = Box::pin(wait_on(&p, &c_slot));
    assert!(poll_once(b.as_mut()).is_pending());
    assert!(poll_once(c.as_mut()).is_pending());
    assert_eq!(counts(&p), (1, 0, 2));
    drop(b); // the client went away while queued
    assert_eq!(counts(&p), (1, 0, 1));
    p.checkin(held, true);
    let Poll::Ready(Ok(s)) = poll_once(c.as_mut()) else {
        panic!("the remaining waiter gets the server");
    };
    assert_eq!(counts(&p), (1, 0, 0));
    p.checkin(s, true);
    assert_eq!(counts(&p), (0, 1, 0));
    // the slot given up earlier is reusable
    let s = wait_on(&p, &b_slot).await.unwrap();
    p.checkin(s, true);
    assert_eq!(counts(&p), (0, 1, 0));
}

#[tokio::test]
async fn a_server_delivered_to_a_wait_given_up_goes_to_the_next_waiter_or_idle() {
    let (p, _peers) = pool(1, 1);
    let held = p.checkout().await.unwrap();
    let slots = [HandOff::new(), HandOff::new()];
    let mut b = Box::pin(wait_on(&p, &slots[0]));
    let mut c = Box::pin(wait_on(&p, &slots[1]));
    assert!(poll_once(b.as_mut()).is_pending());
    assert!(poll_once(c.as_mut()).is_pending());
    p.checkin(held, true); // delivered to b, which never takes it
    assert_eq!(counts(&p), (1, 0, 1));
    drop(b);
    assert_eq!(counts(&p), (1, 0, 0));
    drop(c); // c held it by then: it goes idle, nothing is lost
    assert_eq!(counts(&p), (0, 1, 0));
    // one slot serves many waits in a row
    let held = p.checkout().await.unwrap();
    for _ in 0..3 {
        let mut w = Box::pin(wait_on(&p, &slots[0]));
        assert!(poll_once(w.as_mut()).is_pending());
        drop(w);
    }
    assert_eq!(counts(&p), (1, 0, 0));
    let mut w = Box::pin(wait_on(&p, &slots[0]));
    assert!(poll_once(w.as_mut()).is_pending());
    p.checkin(held, true);
    assert!(matches!(poll_once(w.as_mut()), Poll::Ready(Ok(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_racing_checkout_cancel_and_checkin_lose_no_server() {
    let (p, _peers) = pool(3, 3);
    let mut tasks = Vec::new();
    for i in 0..16u64 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let slot = HandOff::new();
            for j in 0..300u64 {
                if (i + j) % 3 == 0 {
                    // give up after a very short wait
                    let r =
                        tokio::time::timeout(Duration::from_micros(50), wait_on(&p, &slot)).await;
                    if let Ok(r) = r {
                        p.checkin(r.unwrap(), true);
                    }
                    continue;
                }
                let s = wait_on(&p, &slot).await.unwrap();
                tokio::task::yield_now().await;
                p.checkin(s, true);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (active, idle, total, waiting) = p.counts();
    assert_eq!((active, idle, total, waiting), (0, 3, 3, 0));
}

/// Counts `OnLink::linked` calls.
#[derive(Debug, Default)]
struct Marks(AtomicUsize);

impl super::OnLink for Marks {
    fn linked(&self, _: &ServerConn, _: u64) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// A waker that counts its wakes.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl std::task::Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Relaxed);
    }
}

const REQ: &[u8] = b"Q\0\0\0\x0dselect 1\0";

fn offer(params: Arc<[u8]>) -> Option<super::Offer> {
    Some(super::Offer {
        req: bytes::BytesMut::from(REQ),
        params,
        shard: 0,
        sent: 0,
        sent_at: 0,
    })
}

/// A pool of one server, checked out (`held`), and a client's slot whose links and wakes
/// are counted.
struct Queued {
    p: Arc<Pool>,
    peers: Vec<tokio::net::UnixStream>,
    held: ServerConn,
    marks: Arc<Marks>,
    slot: Arc<HandOff>,
    wakes: Arc<Wakes>,
    waker: Waker,
}

async fn queued() -> Queued {
    let (p, peers) = pool(1, 1);
    let held = p.checkout().await.unwrap();
    let marks = Arc::new(Marks::default());
    let slot = HandOff::with_owner(marks.clone());
    let wakes = Arc::new(Wakes::default());
    let waker = Waker::from(wakes.clone());
    Queued {
        p,
        peers,
        held,
        marks,
        slot,
        wakes,
        waker,
    }
}

#[tokio::test]
async fn a_queued_request_goes_on_ahead_and_its_client_wakes_on_the_answer() {
    use tokio::io::AsyncWriteExt;
    let mut q = queued().await;
    let mut offered = offer(q.held.params.packed().clone());
    let mut cx = Context::from_waker(&q.waker);
    let mut w = Box::pin(q.p.checkout_via(Some(&q.slot), crate::clock::now_us(), &mut offered));
    assert!(w.as_mut().poll(&mut cx).is_pending());
    q.p.checkin(q.held, true);
    // the releasing side wrote the request and recorded the link; the client slept on
    let mut buf = [0u8; 64];
    q.peers[0].readable().await.unwrap();
    let n = q.peers[0].try_read(&mut buf).unwrap();
    assert_eq!(&buf[..n], REQ);
    assert_eq!((q.wakes.0.load(Relaxed), q.marks.0.load(Relaxed)), (0, 1));
    // the server's answer wakes it
    q.peers[0].write_all(b"Z\0\0\0\x05I").await.unwrap();
    for _ in 0..200 {
        if q.wakes.0.load(Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(q.wakes.0.load(Relaxed), 1);
    let Poll::Ready(Ok(s)) = w.as_mut().poll(&mut cx) else {
        panic!("the client gets the server");
    };
    drop(w);
    let o = offered.unwrap();
    assert!(o.req.is_empty() && o.sent == REQ.len() && o.sent_at > 0);
    q.p.checkin(s, false);
}

#[tokio::test]
async fn other_parameters_or_a_client_gone_keep_the_request_or_close_the_server() {
    let q = queued().await;
    // parameters differ: nothing is sent, the client is woken to sync them itself
    let mut offered = offer(Arc::from(vec![1u8, 9, 9]));
    let mut cx = Context::from_waker(&q.waker);
    let mut w = Box::pin(q.p.checkout_via(Some(&q.slot), crate::clock::now_us(), &mut offered));
    assert!(w.as_mut().poll(&mut cx).is_pending());
    q.p.checkin(q.held, true);
    assert_eq!((q.wakes.0.load(Relaxed), q.marks.0.load(Relaxed)), (1, 0));
    let Poll::Ready(Ok(s)) = w.as_mut().poll(&mut cx) else {
        panic!("the client gets the server");
    };
    drop(w);
    let o = offered.unwrap();
    assert!(o.req[..] == *REQ && o.sent == 0 && o.sent_at == 0);

    // sent on ahead, then the client gives up before it takes the server: the server holds
    // a request nobody reads, so it is closed, not passed on
    let mut offered = offer(s.params.packed().clone());
    let mut w = Box::pin(q.p.checkout_via(Some(&q.slot), crate::clock::now_us(), &mut offered));
    assert!(w.as_mut().poll(&mut cx).is_pending());
    q.p.checkin(s, true);
    assert_eq!(q.marks.0.load(Relaxed), 1);
    drop(w);
    let (active, idle, total, waiting) = q.p.counts();
    assert_eq!((active, idle, total, waiting), (0, 0, 0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_sending_on_ahead_race_hand_overs_and_lose_nothing() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (p, peers) = pool(3, 3);
    // each server answers every whole request with a ReadyForQuery
    for mut peer in peers {
        tokio::spawn(async move {
            let (mut buf, mut have) = ([0u8; 256], 0);
            while let Ok(n) = peer.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                have += n;
                while have >= REQ.len() {
                    have -= REQ.len();
                    peer.write_all(b"Z\0\0\0\x05I").await.unwrap();
                }
            }
        });
    }
    let params = Tracked::new(&[]).empty_set().packed().clone();
    let mut tasks = Vec::new();
    for i in 0..12u64 {
        let (p, params) = (p.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let slot = HandOff::with_owner(Arc::new(Marks::default()));
            let mut ahead = 0;
            for j in 0..200u64 {
                if (i + j) % 7 == 0 {
                    // a client that gives up after a very short wait (nothing offered)
                    let r =
                        tokio::time::timeout(Duration::from_micros(50), wait_on(&p, &slot)).await;
                    if let Ok(r) = r {
                        p.checkin(r.unwrap(), true);
                    }
                    continue;
                }
                let mut offered = offer(params.clone());
                let mut s = p
                    .checkout_via(Some(&slot), crate::clock::now_us(), &mut offered)
                    .await
                    .unwrap();
                // what was not sent on ahead (all of it, unless this client queued and
                // the releasing client sent it) goes now
                let o = offered.unwrap();
                if o.sent_at > 0 {
                    ahead += 1;
                }
                assert_eq!(o.sent + o.req.len(), REQ.len());
                s.stream.write_all(&o.req).await.unwrap();
                let mut answer = [0u8; 6];
                s.stream.read_exact(&mut answer).await.unwrap();
                assert_eq!(&answer, b"Z\0\0\0\x05I");
                p.checkin(s, true);
            }
            ahead
        }));
    }
    let mut ahead = 0;
    for t in tasks {
        ahead += t.await.unwrap();
    }
    let (active, idle, total, waiting) = p.counts();
    assert_eq!((active, idle, total, waiting), (0, 3, 3, 0));
    // 12 clients on 3 servers queue often: some requests went on ahead
    assert!(ahead > 0);
}
