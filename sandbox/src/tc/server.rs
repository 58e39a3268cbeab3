//! The accept loop. Connections are served with hyper directly (not `axum::serve`) so that a
//! handler can have its connection reset on purpose: the [`ConnReset`] in each request's
//! extensions makes the connection task drop the connection with `SO_LINGER` 0, and the
//! client sees a reset instead of an answer, as with a load balancer or a crashed process.
use std::{
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use axum::{Router, body::Body};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, watch},
    task::JoinSet,
};
use tower::ServiceExt as _;

/// Resets the connection a request came on.
#[derive(Clone, Default)]
pub(crate) struct ConnReset(Arc<ResetInner>);

#[derive(Default)]
struct ResetInner {
    fired: AtomicBool,
    notify: Notify,
}

impl ConnReset {
    pub fn fire(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.notify.notify_one();
    }
}

/// A TCP stream that closes with a reset once its connection was reset on purpose.
struct Resettable {
    inner: TcpStream,
    reset: ConnReset,
}

impl Drop for Resettable {
    fn drop(&mut self) {
        if self.reset.0.fired.load(Ordering::SeqCst) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for Resettable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Resettable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Serves `router` on `listener` until `shutdown` changes; open connections are then dropped.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections.spawn(connection(stream, router.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    connections.abort_all();
    while connections.join_next().await.is_some() {}
}

async fn connection(stream: TcpStream, router: Router) {
    let _ = stream.set_nodelay(true);
    let reset = ConnReset::default();
    let io = TokioIo::new(Resettable {
        inner: stream,
        reset: reset.clone(),
    });
    let for_requests = reset.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let router = router.clone();
        let reset = for_requests.clone();
        async move {
            let mut req = req.map(Body::new);
            req.extensions_mut().insert(reset);
            router.oneshot(req).await
        }
    });
    let conn = http1::Builder::new().serve_connection(io, service);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "queue emulator connection ended with an error");
            }
        }
        _ = reset.0.notify.notified() => {
            tracing::debug!("queue emulator connection reset on purpose");
        }
    }
}
