//! One HTTP/1.1 listener with a hard stop: an accept loop that owns every
//! connection task, so [`Server::stop`] closes the listening socket AND cuts
//! every open connection (event streams included) at once. Clients then see
//! "connection refused" until the port is bound again.
//!
//! (`axum::serve`'s graceful shutdown would wait for endless event streams.)

use std::net::SocketAddr;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    /// Serves `router` on an already bound listener.
    pub fn spawn(listener: TcpListener, router: Router) -> Server {
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(listener, router, stop_rx));
        Server { stop, task }
    }

    /// Closes the listener and every connection; returns once all are gone.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

async fn accept_loop(listener: TcpListener, router: Router, mut stop: oneshot::Receiver<()>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let svc = TowerToHyperService::new(router.clone());
                    conns.spawn(async move {
                        let conn = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    conns.shutdown().await;
}

/// Binds `127.0.0.1:port` (0 = ephemeral).
pub async fn bind(port: u16) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}
