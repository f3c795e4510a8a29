//! Serving: the listener, the optional metrics listener, and graceful shutdown (API.md §4).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::routes;
use crate::state::AppState;
use crate::telemetry::metrics;

/// How long streams get to write their `shutting_down` event before the server closes.
const FINAL_EVENT_WAIT: Duration = Duration::from_secs(5);

/// Serves until `shutdown` resolves, then drains: probes still answer, no new stream starts,
/// open streams get `SHUTDOWN_GRACE_SECS` to finish, the rest end with `shutting_down`.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    metrics::handle();
    let state = AppState::new(config).map_err(std::io::Error::other)?;
    let app = routes::router(state.clone());

    if let Some(addr) = state.config.metrics_addr {
        let metrics_listener = TcpListener::bind(addr).await?;
        tracing::info!(%addr, "serving /metrics on its own address");
        let metrics_app = routes::health::metrics_router();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(metrics_listener, metrics_app).await {
                tracing::error!(error = %e, "metrics listener failed");
            }
        });
    }

    let (close_tx, close_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move {
        let _ = close_rx.await;
    });
    let mut server = tokio::spawn(async move { server.await });

    tokio::select! {
        result = &mut server => return result.map_err(std::io::Error::other)?,
        () = shutdown => {}
    }

    drain(&state).await;
    let _ = close_tx.send(());
    match tokio::time::timeout(FINAL_EVENT_WAIT, &mut server).await {
        Ok(result) => result.map_err(std::io::Error::other)?,
        Err(_) => {
            tracing::warn!("connections still open after shutdown; closing them");
            server.abort();
            Ok(())
        }
    }
}

async fn drain(state: &AppState) {
    state.begin_drain();
    let open = state.streams.open();
    tracing::info!(
        open_streams = open,
        grace_secs = state.config.shutdown_grace.as_secs(),
        "shutting down: draining open streams"
    );
    let deadline = tokio::time::Instant::now() + state.config.shutdown_grace;
    while state.streams.open() > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if state.streams.open() > 0 {
        tracing::warn!(
            open_streams = state.streams.open(),
            "grace over: ending open streams"
        );
        state.streams_cancel.cancel();
        let deadline = tokio::time::Instant::now() + FINAL_EVENT_WAIT;
        while state.streams.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tracing::info!("drained");
}
