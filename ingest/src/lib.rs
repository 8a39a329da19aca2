//! MQTT ingest: subscribe, decode, validate, apply to the ledger, commit to SQLite, and
//! only then acknowledge (docs/design.md#topics-and-sessions: a message is PUBACKed only
//! after the transaction holding it committed).
//!
//! Three stages joined by bounded channels:
//!
//! ```text
//!  broker ─► subscriber task ─(deliveries)─► writer thread ─(acks)─► acker task ─► broker
//!           (rumqttc poll loop)              (decode, ledger,          (client.ack)
//!                                             SQLite commit)
//!  API (counts by hand) ─(manual submissions)─┘ └─(replies, after the commit)─► API
//! ```
//!
//! The poll loop never awaits a client call: rumqttc's request channel is drained only
//! by polling, so a poll loop waiting on `client.ack()` can deadlock. Acks go through
//! their own task instead, and the writer never blocks on them. The writer is a plain
//! thread because rusqlite is blocking; it batches whatever is queued into one
//! transaction, which is what makes manual acks affordable.

mod broker;
mod config;
mod restore;
mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use live::{IngestMetrics, SharedLedger, TownChanges};
use reserve::Registry;
use rumqttc::{AsyncClient, Event, Incoming, Publish, QoS};
use store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use broker::mqtt_options;
pub use config::{IngestConfig, MqttConfig};
pub use reserve::broker_url::{BrokerUrl, BrokerUrlError};
pub use restore::{Restored, restore_ledger};

/// Deliveries queued between the poll loop and the writer. Enough for several batches,
/// few enough that a stalled writer pushes back on the broker within milliseconds.
const DELIVERY_QUEUE: usize = 4096;
/// Payload bytes held between the poll loop and the acks (queued, in the writer's
/// batch, awaiting an ack): the queue's bound in bytes, since 4096 messages of the
/// largest accepted payload would be a gigabyte. A payload over the size limit is cut
/// to its head before it is queued, so it counts for a few hundred bytes.
const DELIVERY_QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// Largest payload rumqttc accepts before dropping the connection. Far above
/// [`reserve::wire`]'s own limit, so an oversize reading is rejected with a reason and
/// acknowledged instead of breaking the connection on every redelivery.
const MAX_PACKET_BYTES: usize = 16 * 1024 * 1024;
/// How long a shutdown waits for the writer's last acks to reach the broker.
const SHUTDOWN_ACKS: Duration = Duration::from_secs(2);
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("store: {0}")]
    Store(#[from] store::StoreError),
    #[error("mqtt options: {0}")]
    Options(String),
    #[error("ingest writer stopped unexpectedly: {0}")]
    Writer(String),
}

/// One message from the broker, with what the writer needs to acknowledge it.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub publish: Publish,
    /// Connection generation it arrived on: an ack for an older connection would
    /// acknowledge whatever the broker now holds under that packet id.
    pub generation: u64,
    /// The payload's length when it was over the size limit: `publish.payload` then
    /// holds only its head (for the reject log), the rest was freed before queueing.
    pub oversize: Option<usize>,
    /// Its share of [`DELIVERY_QUEUE_BYTES`], given back when the delivery is dropped
    /// (after its ack, or after the commit for QoS 0).
    _bytes: tokio::sync::OwnedSemaphorePermit,
}

impl Delivery {
    /// Wraps a publish for the writer, cutting an oversize payload down to its head
    /// first, and waits for room in the queue's byte budget.
    async fn admit(
        mut publish: Publish,
        generation: u64,
        max_payload_bytes: usize,
        budget: &Arc<tokio::sync::Semaphore>,
    ) -> Option<Delivery> {
        let limit = if publish.topic.ends_with("/status") {
            reserve::wire::MAX_STATUS_BYTES
        } else {
            max_payload_bytes
        };
        let mut oversize = None;
        if publish.payload.len() > limit {
            oversize = Some(publish.payload.len());
            // A copy, not a slice: a slice would keep the whole buffer alive.
            let head = publish.payload.len().min(store::MAX_REJECT_PAYLOAD);
            publish.payload = bytes::Bytes::copy_from_slice(&publish.payload[..head]);
        }
        let cost = publish.payload.len().clamp(1, DELIVERY_QUEUE_BYTES);
        let permit = Arc::clone(budget)
            .acquire_many_owned(u32::try_from(cost).unwrap_or(u32::MAX))
            .await
            .ok()?;
        Some(Delivery {
            publish,
            generation,
            oversize,
            _bytes: permit,
        })
    }
}

/// A registry for the writer to adopt between two batches
/// (docs/design.md#registry-reload).
#[derive(Debug)]
pub(crate) struct RegistrySwap {
    registry: Arc<Registry>,
    /// Answered once the ledger is on the new registry.
    adopted: oneshot::Sender<()>,
}

/// The reload's end of the writer's registry input.
#[derive(Debug, Clone)]
pub struct RegistrySwapper {
    swaps: mpsc::Sender<RegistrySwap>,
}

/// The writer's end: handed to [`run_reloadable`].
#[derive(Debug)]
pub struct RegistrySwaps {
    swaps: mpsc::Receiver<RegistrySwap>,
}

impl RegistrySwaps {
    /// The two ends. One reload at a time is all there is (the reload serializes
    /// them), so the queue holds one.
    pub fn channel() -> (RegistrySwapper, RegistrySwaps) {
        let (tx, rx) = mpsc::channel(1);
        (RegistrySwapper { swaps: tx }, RegistrySwaps { swaps: rx })
    }
}

impl RegistrySwapper {
    /// Hands `registry` (already validated, and narrowed to a shard's towns) to the
    /// writer and waits until the ledger is on it: after the batch in progress, so no
    /// batch is half on each registry. An error when ingest is not running.
    pub async fn swap(&self, registry: Arc<Registry>) -> Result<(), IngestError> {
        let (adopted, done) = oneshot::channel();
        let stopped = || IngestError::Writer("ingest is not running".into());
        self.swaps
            .send(RegistrySwap { registry, adopted })
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())
    }
}

/// Runs ingest until `shutdown` is cancelled or the store fails. On shutdown the poll
/// loop stops first, then the writer commits what it holds; nothing it has not
/// committed is acknowledged, so the broker redelivers it to the next run.
pub async fn run(
    config: IngestConfig,
    ledger: SharedLedger,
    store: Store,
    metrics: Arc<IngestMetrics>,
    changes: Arc<TownChanges>,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    // No API to take counts by hand: a queue nobody can send to.
    let (_, manual) = live::ManualReadings::channel(0, Duration::ZERO, Duration::ZERO);
    run_with_manual_readings(config, ledger, store, metrics, changes, manual, shutdown).await
}

/// [`run`], with counts entered by hand (`POST /api/v1/facilities/{id}/readings`)
/// taken from `manual` into the same batches as the MQTT deliveries: stored, committed
/// and applied by the same writer, each answered after its commit. They need no
/// broker: a count is stored while the broker is unreachable.
pub async fn run_with_manual_readings(
    config: IngestConfig,
    ledger: SharedLedger,
    store: Store,
    metrics: Arc<IngestMetrics>,
    changes: Arc<TownChanges>,
    manual: live::ManualQueue,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    // No reload: a registry queue nobody can send to.
    let (_, swaps) = RegistrySwaps::channel();
    run_reloadable(
        config, ledger, store, metrics, changes, manual, swaps, shutdown,
    )
    .await
}

/// [`run_with_manual_readings`], with registries to adopt while running
/// (`stockpile serve`'s reload, docs/design.md#registry-reload).
#[allow(clippy::too_many_arguments)] // each is one of ingest's shared parts
pub async fn run_reloadable(
    config: IngestConfig,
    ledger: SharedLedger,
    store: Store,
    metrics: Arc<IngestMetrics>,
    changes: Arc<TownChanges>,
    manual: live::ManualQueue,
    swaps: RegistrySwaps,
    shutdown: CancellationToken,
) -> Result<(), IngestError> {
    let options = broker::mqtt_options(&config)?;
    // The request channel carries acks and subscriptions; the acker task waits on it,
    // never the poll loop.
    let (client, eventloop) = AsyncClient::new(options, 1024);
    let generation = Arc::new(AtomicU64::new(0));
    let (delivery_tx, delivery_rx) = mpsc::channel::<Delivery>(DELIVERY_QUEUE);
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Delivery>();

    let mut writer = writer::Writer::new(
        config.clone(),
        ledger,
        store,
        Arc::clone(&metrics),
        changes,
        shutdown.clone(),
    );
    // A shard subscribes town by town: a reload may bring towns to subscribe to.
    let mut shard_towns = None;
    if config.towns.is_some() {
        let (tx, rx) = mpsc::channel(1);
        writer = writer.with_shard_towns(tx);
        shard_towns = Some(rx);
    }
    let runtime = tokio::runtime::Handle::current();
    let writer_thread = std::thread::Builder::new()
        .name("ingest-writer".into())
        .spawn(move || writer.run(runtime, delivery_rx, manual, swaps.swaps, ack_tx))
        .map_err(|e| IngestError::Writer(e.to_string()))?;
    let acker = spawn_acker(client.clone(), Arc::clone(&generation), ack_rx);

    let mut subscriber = Subscriber {
        subscription: Subscription::new(config.towns.as_deref()),
        queue: DeliveryQueue {
            max_payload_bytes: config.mqtt.max_payload_bytes,
            generation: Arc::clone(&generation),
            metrics: Arc::clone(&metrics),
            budget: Arc::new(tokio::sync::Semaphore::new(DELIVERY_QUEUE_BYTES)),
            deliveries: delivery_tx,
        },
        config,
        client,
        eventloop,
        generation,
        metrics,
        backoff: BACKOFF_MIN,
        shard_towns,
    };
    let stopped = subscriber.run(&shutdown).await;
    wind_down(subscriber, writer_thread, acker).await?;
    match stopped {
        Stopped::Shutdown => Ok(()),
        Stopped::WriterGone => Err(IngestError::Writer("writer stopped".into())),
    }
}

/// After the poll loop stopped: the writer drains what is queued, commits and exits;
/// then the acks of what it committed are handed to the broker.
async fn wind_down(
    subscriber: Subscriber,
    writer_thread: std::thread::JoinHandle<Result<(), IngestError>>,
    acker: tokio::task::JoinHandle<()>,
) -> Result<(), IngestError> {
    subscriber.metrics.set_connected(false);
    let Subscriber {
        client,
        eventloop,
        queue,
        ..
    } = subscriber;
    // Closing the queue is what stops the writer.
    drop(queue);
    let writer_result = tokio::task::spawn_blocking(move || writer_thread.join())
        .await
        .map_err(|e| IngestError::Writer(e.to_string()))?
        .map_err(|_| IngestError::Writer("writer thread panicked".into()))?;
    hand_over_last_acks(client, eventloop, acker).await;
    writer_result
}

/// Acks committed deliveries, in the order the writer hands them over. Unbounded is
/// safe here: acks are bounded by the deliveries the broker lets us hold
/// unacknowledged (its inflight window).
fn spawn_acker(
    client: AsyncClient,
    generation: Arc<AtomicU64>,
    mut acks: mpsc::UnboundedReceiver<Delivery>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(d) = acks.recv().await {
            if d.generation != generation.load(Ordering::Acquire) {
                continue; // the broker redelivers it on the new connection
            }
            if client.ack(&d.publish).await.is_err() {
                break; // event loop gone: shutting down
            }
        }
    })
}

/// Lets the acker hand over the writer's last acks while we keep polling, so they
/// reach the broker; then disconnects politely. Bounded: shutdown must not hang on a
/// dead broker (what is not acknowledged is redelivered and deduplicated).
async fn hand_over_last_acks(
    client: AsyncClient,
    mut eventloop: rumqttc::EventLoop,
    mut acker: tokio::task::JoinHandle<()>,
) {
    let _ = tokio::time::timeout(SHUTDOWN_ACKS, async {
        loop {
            tokio::select! {
                _ = &mut acker => break,
                event = eventloop.poll() => if event.is_err() { return; },
            }
        }
        if client.try_disconnect().is_ok() {
            while let Ok(event) = eventloop.poll().await {
                if matches!(event, Event::Outgoing(rumqttc::Outgoing::Disconnect)) {
                    break;
                }
            }
        }
    })
    .await;
    acker.abort();
}

/// Why the poll loop stopped.
enum Stopped {
    Shutdown,
    /// The writer dropped its end of the queue: it failed (its error says why).
    WriterGone,
}

/// The rumqttc poll loop: connects, subscribes, and queues each publish for the writer.
/// It never awaits a client call (rumqttc's request queue is drained only by polling).
struct Subscriber {
    config: IngestConfig,
    client: AsyncClient,
    eventloop: rumqttc::EventLoop,
    /// The connection's number: acks carry the one their delivery arrived on.
    generation: Arc<AtomicU64>,
    metrics: Arc<IngestMetrics>,
    queue: DeliveryQueue,
    subscription: Subscription,
    backoff: Duration,
    /// A shard's towns after each reload, from the writer.
    shard_towns: Option<mpsc::Receiver<Vec<String>>>,
}

/// The writer's end of the delivery queue, bounded in messages and in payload bytes.
/// Apart from the subscriber so that waiting for room borrows only this (it is `Sync`;
/// rumqttc's event loop is not).
struct DeliveryQueue {
    max_payload_bytes: usize,
    generation: Arc<AtomicU64>,
    metrics: Arc<IngestMetrics>,
    /// [`DELIVERY_QUEUE_BYTES`] of payload in flight, shared with the writer and acker.
    budget: Arc<tokio::sync::Semaphore>,
    deliveries: mpsc::Sender<Delivery>,
}

impl DeliveryQueue {
    /// Hands a publish to the writer, waiting for room; false when the writer is gone.
    async fn push(&self, publish: Publish) -> bool {
        self.metrics.received();
        let generation = self.generation.load(Ordering::Acquire);
        let Some(delivery) =
            Delivery::admit(publish, generation, self.max_payload_bytes, &self.budget).await
        else {
            return false;
        };
        self.deliveries.send(delivery).await.is_ok()
    }
}

impl Subscriber {
    async fn run(&mut self, shutdown: &CancellationToken) -> Stopped {
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return Stopped::Shutdown,
                Some(towns) = next_towns(&mut self.shard_towns) => {
                    self.subscription.add_towns(&towns);
                    self.subscription.send(&self.client);
                    continue;
                }
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Incoming::ConnAck(ack))) => self.connected(&ack),
                Ok(Event::Incoming(Incoming::Publish(publish))) => {
                    // Backpressure: when the writer is behind (in messages or in bytes)
                    // we stop reading the socket.
                    tokio::select! {
                        _ = shutdown.cancelled() => return Stopped::Shutdown,
                        queued = self.queue.push(publish) => if !queued {
                            return Stopped::WriterGone;
                        },
                    }
                }
                Ok(Event::Incoming(Incoming::SubAck(ack))) => self.subscribed(&ack),
                Ok(Event::Outgoing(rumqttc::Outgoing::Subscribe(_))) => {
                    self.subscription.written();
                    self.subscription.send(&self.client);
                }
                // Any event may have made room in the client's request queue.
                Ok(_) => self.subscription.send(&self.client),
                Err(error) => {
                    self.disconnected(&error);
                    tokio::select! {
                        _ = shutdown.cancelled() => return Stopped::Shutdown,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    fn connected(&mut self, ack: &rumqttc::ConnAck) {
        let g = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.backoff = BACKOFF_MIN;
        tracing::info!(
            message = "Connected to the broker.",
            broker = %self.config.broker,
            session_present = ack.session_present,
            generation = g
        );
        self.subscription.restart(ack.session_present);
        self.subscription.send(&self.client);
        if self.subscription.complete() {
            // Nothing to subscribe to: a shard without towns.
            self.metrics.set_connected(true);
        }
    }

    fn subscribed(&mut self, ack: &rumqttc::SubAck) {
        // Connected means subscribed: until the broker grants the filters, a first-time
        // session has no subscription and readings published now would not be kept for
        // us (readiness and tests wait on this).
        let granted = ack
            .return_codes
            .iter()
            .all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_)));
        if !granted {
            tracing::error!(
                message = "The broker refused a subscription; check the service user's ACL.",
                return_codes = ?ack.return_codes
            );
        }
        if self.subscription.acknowledged(granted) {
            self.metrics.set_connected(true);
            tracing::info!(
                message = "Subscribed.",
                filters = self.subscription.filters(),
                packets = self.subscription.packets.len()
            );
        }
    }

    fn disconnected(&mut self, error: &rumqttc::ConnectionError) {
        self.metrics.set_connected(false);
        // Acks for this connection's deliveries must never reach the next one: on a new
        // session (the broker lost ours) a packet id can name a different message, which
        // would be acknowledged before it is committed. rumqttc drops the PubAcks in its
        // request queue when the connection fails, but the acker may still queue one
        // before it sees the new generation (set at CONNACK). So: a new generation now,
        // then drop again whatever slipped in.
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.eventloop.clean();
        tracing::warn!(
            message = "Broker connection lost; reconnecting.",
            broker = %self.config.broker,
            %error,
            retry_in_ms = self.backoff.as_millis() as u64
        );
    }
}

/// The next town list of a reloaded shard; never, when there is no shard.
async fn next_towns(towns: &mut Option<mpsc::Receiver<Vec<String>>>) -> Option<Vec<String>> {
    match towns {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Most filters in one SUBSCRIBE packet. Brokers cap a packet's size (EMQX at 1 MiB by
/// default, some far lower) and a large shard has two filters per town; 256 filters
/// with 64-character town ids make about 25 KiB.
const FILTERS_PER_SUBSCRIBE: usize = 256;

/// What ingest subscribes to, as SUBSCRIBE packets, and how far each connection got.
/// Connected means every packet granted: a filter not yet granted to a first-time
/// session loses the readings published meanwhile.
#[derive(Debug)]
struct Subscription {
    packets: Vec<Vec<rumqttc::SubscribeFilter>>,
    /// Packets handed to the client on this connection.
    queued: usize,
    /// Packets handed to the client and not yet written to the socket. rumqttc keeps
    /// them across a reconnect and writes them first when the session is resumed, so
    /// their SUBACKs arrive on the next connection.
    unsent: usize,
    /// SUBACKs still due on this connection.
    awaiting: usize,
    refused: bool,
    /// A shard's towns subscribed to, town by town; `None`: the wildcard filters.
    towns: Option<std::collections::BTreeSet<String>>,
}

impl Subscription {
    fn new(towns: Option<&[String]>) -> Subscription {
        let filters: Vec<String> = match towns {
            None => vec![
                reserve::wire::READING_FILTER.to_owned(),
                reserve::wire::STATUS_FILTER.to_owned(),
            ],
            Some(towns) => town_filters(towns),
        };
        Subscription {
            packets: packets(&filters),
            queued: 0,
            unsent: 0,
            awaiting: 0,
            refused: false,
            towns: towns.map(|t| t.iter().cloned().collect()),
        }
    }

    /// A reloaded shard's towns: the filters of those it lacks join the packets, sent
    /// like the rest. A removed town's filters stay until a restart; its readings are
    /// rejected as an unknown town meanwhile.
    fn add_towns(&mut self, towns: &[String]) {
        let Some(subscribed) = &mut self.towns else {
            return;
        };
        let new: Vec<String> = towns
            .iter()
            .filter(|t| subscribed.insert((*t).clone()))
            .cloned()
            .collect();
        if !new.is_empty() {
            tracing::info!(
                message = "Subscribing to the towns a reload added.",
                towns = new.len()
            );
            self.packets.extend(packets(&town_filters(&new)));
        }
    }

    fn filters(&self) -> usize {
        self.packets.iter().map(Vec::len).sum()
    }

    /// A new connection: subscribe again from the first packet (a resumed session has
    /// the filters already; subscribing again is harmless and covers a lost one).
    fn restart(&mut self, session_present: bool) {
        if !session_present {
            self.unsent = 0; // rumqttc dropped them with the old session
        }
        self.awaiting = self.unsent;
        self.queued = 0;
        self.refused = false;
    }

    /// Hands the client every packet its request queue takes now; the rest go on a later
    /// event, as the poll loop drains the queue. `try_`: the poll loop never awaits a
    /// client call.
    fn send(&mut self, client: &AsyncClient) {
        while let Some(packet) = self.packets.get(self.queued) {
            if client.try_subscribe_many(packet.iter().cloned()).is_err() {
                break;
            }
            self.queued += 1;
            self.unsent += 1;
            self.awaiting += 1;
        }
    }

    /// rumqttc wrote a SUBSCRIBE to the socket.
    fn written(&mut self) {
        self.unsent = self.unsent.saturating_sub(1);
    }

    /// A SUBACK came; true when it completes the subscription with everything granted.
    fn acknowledged(&mut self, granted: bool) -> bool {
        self.refused |= !granted;
        self.awaiting = self.awaiting.saturating_sub(1);
        self.complete()
    }

    fn complete(&self) -> bool {
        !self.refused && self.awaiting == 0 && self.queued == self.packets.len()
    }
}

/// The reading and status filters of each town.
fn town_filters(towns: &[String]) -> Vec<String> {
    use reserve::wire::{TopicKind, town_filter};
    towns
        .iter()
        .flat_map(|t| {
            [
                town_filter(t, TopicKind::Reading),
                town_filter(t, TopicKind::Status),
            ]
        })
        .collect()
}

/// Filters as SUBSCRIBE packets of at most [`FILTERS_PER_SUBSCRIBE`].
fn packets(filters: &[String]) -> Vec<Vec<rumqttc::SubscribeFilter>> {
    filters
        .chunks(FILTERS_PER_SUBSCRIBE)
        .map(|chunk| {
            chunk
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce))
                .collect()
        })
        .collect()
}
