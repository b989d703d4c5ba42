//! Following the registry's event stream (ARCH-3): the services that keep a
//! view of workspaces (gateway, scheduler) learn of changes from it instead
//! of asking the registry per request.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agentmesh_proto::registry::v1::{Event, WatchEventsRequest, registry_service_client::RegistryServiceClient};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tonic::Code;

use crate::client::ServiceChannel;

/// What happens to the stream, in order.
#[derive(Debug)]
pub enum StreamChange {
    /// The stream is up: events from now on are seen (a view built from
    /// events may be trusted again).
    Connected,
    Event(Event),
    /// The stream broke: events may be missed until the next `Connected`.
    Disconnected,
}

/// Whether a follower's stream is up, with a signal each time that changes:
/// a service whose readiness depends on the stream is checked again at
/// once (see `ServeOptions::recheck`) rather than on its next tick.
#[derive(Debug, Default)]
pub struct StreamState {
    up: AtomicBool,
    changes: Arc<Notify>,
}

impl StreamState {
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn set(&self, up: bool) {
        if self.up.swap(up, Ordering::AcqRel) != up {
            // A permit is kept when nobody waits yet, so no change is missed.
            self.changes.notify_one();
        }
    }

    /// Notified after each change.
    pub fn changes(&self) -> Arc<Notify> {
        self.changes.clone()
    }
}

/// Follows the registry's events until `shutdown`, handing every change to
/// `on_change`; after a break it reconnects with backoff and resumes after
/// the last event seen (or from the oldest event the registry still holds,
/// when that one fell out of its retention).
pub async fn follow(
    mut watcher: RegistryServiceClient<ServiceChannel>,
    shutdown: CancellationToken,
    mut on_change: impl FnMut(StreamChange),
) {
    let mut cursor: Option<u64> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let request = WatchEventsRequest { after_cursor: cursor, ..Default::default() };
        let opened = tokio::select! {
            () = shutdown.cancelled() => return,
            opened = watcher.watch_events(request) => opened,
        };
        match opened {
            Ok(stream) => {
                let mut stream = stream.into_inner();
                on_change(StreamChange::Connected);
                tracing::info!("following the registry's events");
                loop {
                    let next = tokio::select! {
                        () = shutdown.cancelled() => return,
                        next = stream.message() => next,
                    };
                    match next {
                        Ok(Some(reply)) => {
                            if let Some(event) = reply.event {
                                backoff = Duration::from_millis(100);
                                cursor = Some(event.cursor);
                                on_change(StreamChange::Event(event));
                            }
                        }
                        Ok(None) => break,
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "registry event stream broke");
                            break;
                        }
                    }
                }
                on_change(StreamChange::Disconnected);
            }
            Err(status) => {
                if matches!(status.code(), Code::OutOfRange | Code::InvalidArgument) {
                    cursor = None;
                }
                tracing::warn!(code = ?status.code(), message = status.message(), "cannot follow the registry's events");
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
