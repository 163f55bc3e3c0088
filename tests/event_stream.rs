//! The event stream follower (`watch::stream::follow`) against hostile and
//! ordinary beacon nodes: a tiny HTTP/1.1 server on loopback, written here,
//! answers the chain check and serves one scripted event stream per
//! connection. Every wait is on a condition with a deadline.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keysync::http::{Http, RetryPolicy};
use keysync::metrics::Metrics;
use keysync::watch::ops::Health;
use keysync::watch::stream::{follow, StreamConfig};
use keysync::watch::trigger::{self, Stamped, Trigger};
use support::{eventually, init_logs};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};

const T: Duration = Duration::from_secs(20);
const SLOT: Duration = Duration::from_millis(100);
/// `follow`'s silence deadline for [`SLOT`]: two slots, at least 1 s.
const SILENCE: Duration = Duration::from_secs(1);
const MIB: usize = 1 << 20;

/// What the server does on an event stream connection.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// `data: xxxx…` without a line break, forever (64 MiB at most), in
    /// 4 KiB writes.
    EndlessLine,
    /// Keep-alive comments every 200 ms for 2.5 s, then one byte every
    /// 50 ms that never completes a line.
    KeepAliveThenDrip,
    /// A scripted run of events (one of them bad), then silence with the
    /// connection open.
    Events,
}

/// One event stream connection, as the server saw it.
#[derive(Default)]
struct Conn {
    /// Body bytes written to the socket.
    sent: AtomicUsize,
    /// The client closed the connection.
    closed: AtomicBool,
    closed_at: Mutex<Option<Instant>>,
    /// KeepAliveThenDrip: the keep-alive phase is over.
    keepalives_done: AtomicBool,
    last_keepalive: Mutex<Option<Instant>>,
}

impl Conn {
    fn close(&self) {
        if !self.closed.swap(true, Ordering::SeqCst) {
            *self.closed_at.lock().unwrap() = Some(Instant::now());
        }
    }
    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
struct Seen {
    /// Request lines (`GET /path HTTP/1.1`), in arrival order.
    requests: Mutex<Vec<String>>,
    /// The whole head of each event stream request.
    stream_heads: Mutex<Vec<String>>,
    streams: Mutex<Vec<Arc<Conn>>>,
}

impl Seen {
    fn stream(&self, n: usize) -> Option<Arc<Conn>> {
        self.streams.lock().unwrap().get(n).cloned()
    }
    fn stream_count(&self) -> usize {
        self.streams.lock().unwrap().len()
    }
}

struct Server {
    url: url::Url,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A beacon node on loopback on chain `chain_id`, serving `script`.
async fn server(chain_id: u64, script: Script) -> Server {
    // A fixed, small send buffer (accepted sockets inherit it; fixing it
    // turns off the kernel's autotuning, which grows it to MiBs on
    // loopback): what the server has written is then what the client read,
    // give or take the client's receive buffer (small writes keep that one
    // small too: measured 1.01–1.15 MiB in all under CPU load).
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(16 * 1024).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(64).unwrap();
    let url = url::Url::parse(&format!("http://{}/", listener.local_addr().unwrap())).unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            tokio::spawn(handle(sock, chain_id, script, s.clone()));
        }
    });
    Server { url, seen, task }
}

async fn read_head(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = sock.read(&mut byte).await.ok()?;
        if n == 0 || buf.len() > 16 * 1024 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    Some(String::from_utf8_lossy(&buf).into_owned())
}

async fn handle(mut sock: TcpStream, chain_id: u64, script: Script, seen: Arc<Seen>) {
    let Some(head) = read_head(&mut sock).await else {
        return;
    };
    let line = head.lines().next().unwrap_or_default().to_string();
    seen.requests.lock().unwrap().push(line.clone());
    let path = line.split(' ').nth(1).unwrap_or_default();
    if path == "/eth/v1/config/deposit_contract" {
        let body = format!(
            r#"{{"data":{{"chain_id":"{chain_id}","address":"0x00000000219ab540356cbb839cbe05303d7705fa"}}}}"#
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = sock.write_all(resp.as_bytes()).await;
        return;
    }
    if !path.starts_with("/eth/v1/events") {
        let _ = sock
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    seen.stream_heads.lock().unwrap().push(head);
    let conn = Arc::new(Conn::default());
    seen.streams.lock().unwrap().push(conn.clone());
    // No content-length, no chunking: the body lasts until the socket closes.
    let ok = sock
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n\r\n")
        .await;
    if ok.is_err() {
        conn.close();
        return;
    }
    let (mut rd, mut wr) = sock.into_split();
    // The client closing its end shows up as EOF (or an error) here.
    let watcher = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let mut b = [0u8; 64];
            while matches!(rd.read(&mut b).await, Ok(n) if n > 0) {}
            conn.close();
        })
    };
    let sent = |n: usize| conn.sent.fetch_add(n, Ordering::SeqCst);
    match script {
        Script::EndlessLine => {
            let chunk = vec![b'x'; 4 * 1024];
            let mut first: &[u8] = b"data: ";
            while !conn.is_closed() && conn.sent.load(Ordering::SeqCst) < 64 * MIB {
                if wr.write_all(first).await.is_err() || wr.write_all(&chunk).await.is_err() {
                    break;
                }
                sent(first.len() + chunk.len());
                first = b"";
            }
        }
        Script::KeepAliveThenDrip => {
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(2500) {
                if wr.write_all(b": keep-alive\n\n").await.is_err() {
                    break;
                }
                sent(14);
                *conn.last_keepalive.lock().unwrap() = Some(Instant::now());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            conn.keepalives_done.store(true, Ordering::SeqCst);
            let drip = b"data: {\"slot\":\"1\"";
            let mut i = 0;
            while !conn.is_closed() && start.elapsed() < Duration::from_secs(30) {
                let b = [drip[i % drip.len()]];
                if wr.write_all(&b).await.is_err() {
                    break;
                }
                sent(1);
                i += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Script::Events => {
            let events: &[&str] = &[
                "event: head\ndata: {\"slot\":\"1\",\"block\":\"0x1\",\"epoch_transition\":false}\n\n",
                ": keep-alive\n\n",
                "event: head\ndata: {\"slot\":\"4\",\"block\":\"0x2\",\"epoch_transition\":true}\n\n",
                "event: voluntary_exit\ndata: {\"message\":{\"epoch\":\"1\",\"validator_index\":\"three\"}}\n\n",
                "event: voluntary_exit\ndata: {\"message\":{\"epoch\":\"1\",\"validator_index\":\"3\"},\"signature\":\"0x93\"}\n\n",
                "event: finalized_checkpoint\ndata: {\"block\":\"0x3\",\"state\":\"0x4\",\"epoch\":\"1\",\"execution_optimistic\":false}\n\n",
                "event: chain_reorg\r\ndata: {\"slot\":\"5\",\"depth\":\"1\",\"old_head_block\":\"0x5\",\"new_head_block\":\"0x6\",\"epoch\":\"1\"}\r\n\r\n",
            ];
            for e in events {
                if wr.write_all(e.as_bytes()).await.is_err() {
                    break;
                }
                sent(e.len());
            }
            let _ = tokio::time::timeout(Duration::from_secs(60), async {
                while !conn.is_closed() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
            .await;
        }
    }
    conn.close();
    watcher.abort();
}

/// `follow` running against `urls`, with what it reports.
struct Follower {
    metrics: Arc<Metrics>,
    triggers: mpsc::UnboundedReceiver<Stamped>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Follower {
    fn start(urls: Vec<url::Url>) -> Follower {
        init_logs();
        let http = Http::new(
            Duration::from_secs(5),
            RetryPolicy {
                attempts: 1,
                ..Default::default()
            },
            None,
            Vec::new(),
        )
        .unwrap();
        let cfg = StreamConfig {
            urls,
            expected_chain: Some((1, "1".into())),
            slot: keysync::watch::slot::SlotLength::new(Some(SLOT)),
            http,
        };
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(Health::new(Duration::from_secs(300)));
        let (tx, rx) = trigger::channel();
        let (shutdown, shutdown_rx) = watch::channel(false);
        let task = tokio::spawn(follow(cfg, tx, metrics.clone(), health, shutdown_rx));
        Follower {
            metrics,
            triggers: rx,
            shutdown,
            task,
        }
    }

    fn ended(&self, reason: &str) -> f64 {
        self.metrics
            .get("keysync_event_stream_ended_total", &[("reason", reason)])
    }

    fn reconnects(&self) -> f64 {
        self.metrics
            .get("keysync_event_stream_reconnects_total", &[])
    }

    async fn next_trigger(&mut self) -> Trigger {
        match tokio::time::timeout(T, self.triggers.recv()).await {
            Ok(Some(s)) => s.trigger,
            other => panic!("no trigger within {T:?}: {other:?}"),
        }
    }

    async fn stop(self) {
        let _ = self.shutdown.send(true);
        tokio::time::timeout(T, self.task)
            .await
            .expect("follow stops on shutdown")
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_data_line_ends_the_session_before_2_mib() {
    let node = server(1, Script::EndlessLine).await;
    let f = Follower::start(vec![node.url.clone()]);
    eventually("the session ends as too large", T, || {
        f.ended("too_large") >= 1.0
    })
    .await;
    eventually("the client drops the connection", T, || {
        node.seen.stream(0).is_some_and(|c| c.is_closed())
    })
    .await;
    let first = node.seen.stream(0).unwrap();
    let sent = first.sent.load(Ordering::SeqCst);
    eprintln!("endless line: the server wrote {sent} bytes before the client hung up");
    assert!(
        sent > MIB,
        "the cap is 1 MiB, yet it ended after {sent} bytes"
    );
    assert!(
        sent < 2 * MIB,
        "the server wrote {sent} bytes before the client hung up"
    );
    assert_eq!(f.ended("silent"), 0.0);
    // The normal path goes on: it reconnects (and is cut off again).
    eventually("reconnected", T, || node.seen.stream_count() >= 2).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drip_of_bytes_does_not_keep_the_stream_alive_but_keep_alives_do() {
    let node = server(1, Script::KeepAliveThenDrip).await;
    let f = Follower::start(vec![node.url.clone()]);
    eventually("subscribed", T, || node.seen.stream_count() >= 1).await;
    let first = node.seen.stream(0).unwrap();
    // 2.5 s of keep-alives, more than twice the 1 s deadline: still up.
    eventually("keep-alive phase over", T, || {
        first.keepalives_done.load(Ordering::SeqCst)
    })
    .await;
    assert!(!first.is_closed(), "keep-alive comments keep the stream up");
    assert_eq!(f.ended("silent"), 0.0);
    assert_eq!(f.reconnects(), 1.0);
    // Then bytes that never complete a line: the deadline runs out.
    eventually("the drip session ends as silent", T, || {
        f.ended("silent") >= 1.0
    })
    .await;
    eventually("the client drops the connection", T, || first.is_closed()).await;
    let last = first.last_keepalive.lock().unwrap().unwrap();
    let closed = first.closed_at.lock().unwrap().unwrap();
    let quiet = closed - last;
    assert!(
        quiet >= SILENCE && quiet < SILENCE * 4,
        "closed {quiet:?} after the last keep-alive"
    );
    assert!(first.sent.load(Ordering::SeqCst) > 14 * 10 + 10);
    eventually("reconnected", T, || f.reconnects() >= 2.0).await;
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_become_triggers_and_a_bad_event_is_skipped() {
    let node = server(1, Script::Events).await;
    let mut f = Follower::start(vec![node.url.clone()]);
    assert_eq!(f.next_trigger().await, Trigger::Reconnected);
    assert_eq!(f.next_trigger().await, Trigger::Epoch(4));
    assert_eq!(f.next_trigger().await, Trigger::Exit(3));
    assert_eq!(f.next_trigger().await, Trigger::Finalized);
    assert_eq!(f.next_trigger().await, Trigger::Reorg);
    let m = |name, topic| f.metrics.get(name, &[("topic", topic)]);
    assert_eq!(m("keysync_events_total", "head"), 2.0);
    assert_eq!(m("keysync_events_total", "voluntary_exit"), 1.0);
    assert_eq!(m("keysync_events_invalid_total", "voluntary_exit"), 1.0);
    assert_eq!(f.reconnects(), 1.0, "the bad event did not end the session");

    // The chain check came first; topics are repeated, never comma-joined.
    let requests = node.seen.requests.lock().unwrap().clone();
    assert!(requests[0].starts_with("GET /eth/v1/config/deposit_contract "));
    assert!(
        requests[1].starts_with(
            "GET /eth/v1/events?topics=head&topics=finalized_checkpoint&topics=voluntary_exit&topics=chain_reorg HTTP/1.1"
        ),
        "{requests:?}"
    );
    let head = node.seen.stream_heads.lock().unwrap()[0].to_ascii_lowercase();
    assert!(head.contains("\r\naccept: text/event-stream\r\n"), "{head}");
    f.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_another_chain_is_skipped_for_the_next_one() {
    let wrong = server(5, Script::Events).await;
    let right = server(1, Script::Events).await;
    let mut f = Follower::start(vec![wrong.url.clone(), right.url.clone()]);
    assert_eq!(f.next_trigger().await, Trigger::Reconnected);
    assert_eq!(f.next_trigger().await, Trigger::Epoch(4));
    assert_eq!(right.seen.stream_count(), 1);
    assert_eq!(wrong.seen.stream_count(), 0, "never subscribed to chain 5");
    assert!(!wrong.seen.requests.lock().unwrap().is_empty());
    f.stop().await;
}
