//! The live log stream behind `/v1/agent/monitor` and `cairn monitor`: a
//! `tracing` layer that hands every record to the monitors listening, each
//! at its own level, whatever level the agent itself logs at.
//!
//! Each monitor has a bounded queue of its own. Logging never waits for a
//! reader: a record that finds a monitor's queue full is dropped for that
//! monitor and counted, and the monitor's stream says "N log lines
//! dropped" where the gap is, as Consul's does. With no monitor listening
//! the layer asks `tracing` for nothing, so debug and trace records cost
//! what they cost without it.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tracing::field::{Field, Visit};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// How many lines a monitor may fall behind before lines are dropped
/// (Consul's buffer size).
const BUFFER: usize = 512;

/// A monitor's level, as Consul spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Errors only.
    Error = 1,
    /// Warnings and errors.
    Warn = 2,
    /// The default.
    Info = 3,
    /// Debugging detail.
    Debug = 4,
    /// Everything.
    Trace = 5,
}

impl LogLevel {
    /// Consul's levels, any case: `TRACE`, `DEBUG`, `INFO`, `WARN`, `ERR`
    /// and `ERROR`.
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARN" => LogLevel::Warn,
            "ERR" | "ERROR" => LogLevel::Error,
            _ => return None,
        })
    }

    fn of(level: &tracing::Level) -> LogLevel {
        match *level {
            tracing::Level::ERROR => LogLevel::Error,
            tracing::Level::WARN => LogLevel::Warn,
            tracing::Level::INFO => LogLevel::Info,
            tracing::Level::DEBUG => LogLevel::Debug,
            tracing::Level::TRACE => LogLevel::Trace,
        }
    }

    fn from_u8(n: u8) -> Option<LogLevel> {
        [
            LogLevel::Error,
            LogLevel::Warn,
            LogLevel::Info,
            LogLevel::Debug,
            LogLevel::Trace,
        ]
        .into_iter()
        .find(|l| *l as u8 == n)
    }

    /// hclog's label, padded to one width as hclog pads it.
    fn label(self) -> &'static str {
        match self {
            LogLevel::Error => "[ERROR]",
            LogLevel::Warn => "[WARN] ",
            LogLevel::Info => "[INFO] ",
            LogLevel::Debug => "[DEBUG]",
            LogLevel::Trace => "[TRACE]",
        }
    }

    fn word(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// Whether a monitor at `want` shows a record at `level` from `target`.
/// openraft narrates every step of Raft at info and below; as on the
/// agent's own output, only its warnings show, except at trace.
fn admits(want: LogLevel, level: LogLevel, target: &str) -> bool {
    level <= want && (want == LogLevel::Trace || level <= LogLevel::Warn || !noisy(target))
}

fn noisy(target: &str) -> bool {
    target.starts_with("openraft")
}

/// One log record, as the monitors receive it.
#[derive(Debug, Clone)]
pub struct Record {
    at: time::OffsetDateTime,
    level: LogLevel,
    module: String,
    message: String,
    fields: Vec<(String, Value)>,
}

impl Record {
    fn of(event: &Event<'_>) -> Record {
        let meta = event.metadata();
        let mut v = Fields::default();
        event.record(&mut v);
        let target = v.log_target.as_deref().unwrap_or(meta.target());
        Record {
            at: time::OffsetDateTime::now_utc(),
            level: LogLevel::of(meta.level()),
            module: module_name(target),
            message: v.message,
            fields: v.fields,
        }
    }

    /// The line in hclog's plain format: `2006-01-02T15:04:05.000Z
    /// [INFO]  agent.reload: configuration reloaded: services=1 checks=0`.
    pub fn text(&self) -> String {
        let t = self.at;
        let mut line = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z {} ",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.millisecond(),
            self.level.label(),
        );
        if !self.module.is_empty() {
            line.push_str(&self.module);
            line.push_str(": ");
        }
        line.push_str(&self.message);
        if !self.fields.is_empty() {
            line.push(':');
        }
        for (k, v) in &self.fields {
            line.push(' ');
            line.push_str(k);
            line.push('=');
            line.push_str(&plain_value(v));
        }
        line.push('\n');
        line
    }

    /// The line in hclog's JSON format: `@level`, `@message`, `@module`,
    /// `@timestamp`, then the record's own fields.
    pub fn json(&self) -> String {
        let t = self.at;
        let stamp = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            t.month() as u8,
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            t.microsecond(),
        );
        let mut m = Map::new();
        m.insert("@level".into(), self.level.word().into());
        m.insert("@message".into(), self.message.clone().into());
        if !self.module.is_empty() {
            m.insert("@module".into(), self.module.clone().into());
        }
        m.insert("@timestamp".into(), stamp.into());
        for (k, v) in &self.fields {
            m.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut line = Value::Object(m).to_string();
        line.push('\n');
        line
    }

    /// The notice a monitor gets where it missed `n` lines.
    fn dropped(n: u64) -> Record {
        Record {
            at: time::OffsetDateTime::now_utc(),
            level: LogLevel::Warn,
            module: "agent.monitor".into(),
            message: format!("{n} log lines dropped (this monitor read too slowly)"),
            fields: Vec::new(),
        }
    }
}

/// hclog's module name for a `tracing` target: cairn's own modules without
/// the crate name (`agent.reload`), others dotted (`openraft.core`).
fn module_name(target: &str) -> String {
    target
        .strip_prefix("cairn::")
        .unwrap_or(target)
        .replace("::", ".")
}

/// A value as hclog writes it in a plain line: quoted when it would
/// otherwise read as more than one value.
fn plain_value(v: &Value) -> String {
    match v {
        Value::String(s)
            if s.is_empty()
                || s.chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
        {
            Value::String(s.clone()).to_string()
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Collects an event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, Value)>,
    /// A record that came through the `log` crate names its real target
    /// in a field.
    log_target: Option<String>,
}

impl Fields {
    fn put(&mut self, field: &Field, v: Value) {
        match field.name() {
            "message" => {
                self.message = match v {
                    Value::String(s) => s,
                    other => other.to_string(),
                }
            }
            "log.target" => self.log_target = v.as_str().map(str::to_owned),
            n if n.starts_with("log.") => {}
            n => self.fields.push((n.to_string(), v)),
        }
    }
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.put(field, v);
    }
}

/// A monitor, as the hub sees it.
struct Sub {
    id: u64,
    level: LogLevel,
    tx: mpsc::Sender<(u64, Arc<Record>)>,
    /// Lines dropped since the last one this monitor was given.
    pending_drop: u64,
    /// Lines dropped in all.
    dropped: u64,
}

/// The monitors listening; see the [module docs](self).
#[derive(Default)]
pub struct LogHub {
    subs: Mutex<Vec<Sub>>,
    /// The most detailed level any monitor wants (0: none listens).
    max: AtomicU8,
    next_id: AtomicU64,
}

impl LogHub {
    /// Starts a monitor at `level`; it stops when the [`Subscription`] is
    /// dropped.
    pub fn subscribe(self: &Arc<Self>, level: LogLevel) -> Subscription {
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.push(Sub {
                id,
                level,
                tx,
                pending_drop: 0,
                dropped: 0,
            });
            self.set_max(&subs);
        }
        // Callsites `tracing` decided nobody wants are asked again.
        tracing::callsite::rebuild_interest_cache();
        Subscription {
            rx,
            hub: self.clone(),
            id,
        }
    }

    /// Stops monitor `id`; how many lines it missed.
    fn unsubscribe(&self, id: u64) -> u64 {
        let dropped = {
            let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            let dropped = subs.iter().find(|s| s.id == id).map_or(0, |s| s.dropped);
            subs.retain(|s| s.id != id);
            self.set_max(&subs);
            dropped
        };
        tracing::callsite::rebuild_interest_cache();
        dropped
    }

    fn set_max(&self, subs: &[Sub]) {
        let max = subs.iter().map(|s| s.level as u8).max().unwrap_or(0);
        self.max.store(max, Ordering::Relaxed);
    }

    fn max(&self) -> Option<LogLevel> {
        LogLevel::from_u8(self.max.load(Ordering::Relaxed))
    }

    fn wants(&self, meta: &Metadata<'_>) -> bool {
        self.max()
            .is_some_and(|max| admits(max, LogLevel::of(meta.level()), meta.target()))
    }

    fn publish(&self, event: &Event<'_>) {
        let record = Arc::new(Record::of(event));
        let target = event.metadata().target();
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        for s in subs.iter_mut() {
            if !admits(s.level, record.level, target) {
                continue;
            }
            match s.tx.try_send((s.pending_drop, record.clone())) {
                Ok(()) => s.pending_drop = 0,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    s.pending_drop += 1;
                    s.dropped += 1;
                }
                // Going away; its subscription removes it.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
    }

    /// The `tracing` layer that feeds this hub, with the filter that asks
    /// only for what some monitor wants.
    pub fn layer<S>(self: &Arc<Self>) -> impl Layer<S>
    where
        S: Subscriber + for<'a> LookupSpan<'a>,
    {
        MonitorLayer(self.clone()).with_filter(MonitorFilter(self.clone()))
    }
}

/// One monitor's stream of lines.
pub struct Subscription {
    rx: mpsc::Receiver<(u64, Arc<Record>)>,
    hub: Arc<LogHub>,
    id: u64,
}

impl Subscription {
    /// The next record, or records: a notice first when lines were dropped
    /// just before it.
    pub async fn next(&mut self) -> Option<Vec<Arc<Record>>> {
        let (dropped, record) = self.rx.recv().await?;
        Some(match dropped {
            0 => vec![record],
            n => vec![Arc::new(Record::dropped(n)), record],
        })
    }

    /// [`next`](Self::next), formatted as text or JSON lines.
    pub async fn next_lines(&mut self, json: bool) -> Option<String> {
        let records = self.next().await?;
        Some(
            records
                .iter()
                .map(|r| if json { r.json() } else { r.text() })
                .collect(),
        )
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let dropped = self.hub.unsubscribe(self.id);
        if dropped > 0 {
            tracing::warn!(
                dropped_count = dropped,
                "Dropped logs during monitor request"
            );
        }
    }
}

struct MonitorLayer(Arc<LogHub>);

impl<S: Subscriber> Layer<S> for MonitorLayer {
    fn on_event(&self, event: &Event<'_>, _cx: Context<'_, S>) {
        self.0.publish(event);
    }
}

struct MonitorFilter(Arc<LogHub>);

impl<S> Filter<S> for MonitorFilter {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        self.0.wants(meta)
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        // Exact for now: the hub rebuilds the cache when monitors come
        // and go.
        if self.0.wants(meta) {
            Interest::sometimes()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match self.0.max() {
            None => LevelFilter::OFF,
            Some(LogLevel::Error) => LevelFilter::ERROR,
            Some(LogLevel::Warn) => LevelFilter::WARN,
            Some(LogLevel::Info) => LevelFilter::INFO,
            Some(LogLevel::Debug) => LevelFilter::DEBUG,
            Some(LogLevel::Trace) => LevelFilter::TRACE,
        })
    }
}

/// The process's hub, once [`install`] made one.
static HUB: OnceLock<Arc<LogHub>> = OnceLock::new();

/// The layer that feeds the process's hub, to add to the `tracing`
/// subscriber the process installs; from then on [`hub`] finds it.
pub fn install<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    HUB.get_or_init(Arc::default).layer()
}

/// The process's hub, if the process installed one.
pub fn hub() -> Option<Arc<LogHub>> {
    HUB.get().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn levels_are_consuls() {
        assert_eq!(LogLevel::parse("err"), Some(LogLevel::Error));
        assert_eq!(LogLevel::parse("Debug"), Some(LogLevel::Debug));
        assert_eq!(LogLevel::parse("warning"), None);
        assert_eq!(LogLevel::parse(""), None);
        assert!(admits(LogLevel::Info, LogLevel::Warn, "cairn::agent"));
        assert!(!admits(LogLevel::Info, LogLevel::Debug, "cairn::agent"));
        assert!(!admits(LogLevel::Debug, LogLevel::Info, "openraft::core"));
        assert!(admits(LogLevel::Trace, LogLevel::Info, "openraft::core"));
    }

    #[tokio::test]
    async fn monitors_get_their_levels_and_learn_of_drops() {
        let hub = Arc::new(LogHub::default());
        let subscriber = tracing_subscriber::registry().with(hub.layer());
        let _guard = tracing::subscriber::set_default(subscriber);
        tracing::info!("before anyone listens");
        let mut info = hub.subscribe(LogLevel::Info);
        let mut debug = hub.subscribe(LogLevel::Debug);
        tracing::debug!(port = 80u64, "a debug line");
        tracing::info!(name = "two words", ok = true, "an info line");
        let got = debug.next_lines(false).await.unwrap_or_default();
        assert!(got.contains(" [DEBUG] "), "{got}");
        assert!(got.ends_with("a debug line: port=80\n"), "{got}");
        let got = info.next_lines(true).await.unwrap_or_default();
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v["@level"], "info");
        assert_eq!(v["@message"], "an info line");
        assert_eq!(v["name"], "two words");
        assert_eq!(v["ok"], true);
        let got = debug.next_lines(false).await.unwrap_or_default();
        assert!(
            got.ends_with("an info line: name=\"two words\" ok=true\n"),
            "{got}"
        );
        // A reader that falls behind loses lines, and is told how many.
        drop(debug);
        for i in 0..BUFFER + 3 {
            tracing::info!(i, "flood");
        }
        for _ in 0..BUFFER {
            info.next().await;
        }
        tracing::info!("after the flood");
        let got = info.next_lines(false).await.unwrap_or_default();
        assert!(got.contains("3 log lines dropped"), "{got}");
        assert!(got.ends_with("after the flood\n"), "{got}");
        drop(info);
        assert_eq!(hub.max(), None);
    }
}
