//! `bbb dead-letters`: list, show, requeue and purge the entries of the dead-letter list
//! `<prefix>:dead-letters` (newest first).
//!
//! An entry is removed by its exact stored text (`LREM`), never by index: workers and ingest
//! push new entries at any time, which shifts every index. A requeue first stores the job (or
//! publishes the message) and only then removes the entry, so a failure in between leaves the
//! entry in place rather than losing it (a second requeue then runs the job twice, which every
//! job tolerates).
use anyhow::{Context as _, bail};
use bbb_shared::{
    config::Config,
    jobs::{BRIDGE_KINDS, Job as _, Probe},
    queue::{DeadLetter, JobQueue, QueueSettings},
};
use redis::aio::ConnectionManager;

use crate::queue::{
    Align::{Left, Right},
    table,
};

/// Entries read per round trip when scanning the list.
const CHUNK: isize = 500;

#[derive(Debug, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, newest first: id, time, source (`job` or `ingest`), queue (job kind
    /// or Pulse queue purpose), attempts and reason.
    List {
        /// Show at most N entries.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Print the entries as a JSON array, as stored.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter in full: reason, exchange and routing key, body, job envelope.
    /// ID may be a unique prefix of the id.
    Show {
        id: String,
        /// Print the entry as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Requeue a dead letter and remove it from the list. A job goes back on its kind's queue
    /// as a new job (attempts reset); a Pulse message is republished to its exchange with its
    /// routing key (only when its whole body was kept). With --all, every entry.
    Requeue {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// Requeue every entry; entries that cannot be requeued are reported and kept.
        #[arg(long)]
        all: bool,
    },
    /// Remove a dead letter for good; --all removes every entry present when it starts.
    Purge {
        #[arg(conflicts_with = "all")]
        id: Option<String>,
        /// Remove every entry (required to purge more than one).
        #[arg(long)]
        all: bool,
    },
}

/// One entry: its stored text (what removal matches) and, if it parses, its content.
struct Entry {
    raw: String,
    letter: Option<DeadLetter>,
}

struct DeadLetters {
    queue: JobQueue,
    conn: ConnectionManager,
    key: String,
}

impl DeadLetters {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        let conn = bbb_shared::queue::connect(&config.redis.url)
            .await
            .with_context(|| format!("connecting to Redis at {}", config.redis.url))?;
        let settings = QueueSettings::from_config(config);
        let key = settings.dead_letter_key();
        Ok(Self {
            queue: JobQueue::new(conn.clone(), settings),
            conn,
            key,
        })
    }

    async fn range(&self, start: isize, stop: isize) -> anyhow::Result<Vec<Entry>> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("LRANGE")
            .arg(&self.key)
            .arg(start)
            .arg(stop)
            .query_async(&mut conn)
            .await
            .context("reading the dead-letter list")?;
        Ok(raw
            .into_iter()
            .map(|raw| Entry {
                letter: serde_json::from_str(&raw).ok(),
                raw,
            })
            .collect())
    }

    async fn len(&self) -> anyhow::Result<usize> {
        let mut conn = self.conn.clone();
        let n: usize = redis::cmd("LLEN")
            .arg(&self.key)
            .query_async(&mut conn)
            .await
            .context("reading the dead-letter list")?;
        Ok(n)
    }

    /// Every entry, newest first (read in chunks).
    async fn all(&self) -> anyhow::Result<Vec<Entry>> {
        let mut entries = Vec::new();
        loop {
            let start = isize::try_from(entries.len()).unwrap_or(isize::MAX);
            let chunk = self.range(start, start + CHUNK - 1).await?;
            let done = chunk.len() < usize::try_from(CHUNK).unwrap_or(usize::MAX);
            entries.extend(chunk);
            if done {
                return Ok(entries);
            }
        }
    }

    /// The entry whose id is `id`, or the one entry whose id starts with it.
    async fn find(&self, id: &str) -> anyhow::Result<(Entry, DeadLetter)> {
        let mut prefixed = Vec::new();
        for entry in self.all().await? {
            let Some(letter) = entry.letter.clone() else {
                continue;
            };
            if letter.id == id {
                return Ok((entry, letter));
            }
            if letter.id.starts_with(id) {
                prefixed.push((entry, letter));
            }
        }
        match prefixed.len() {
            1 => Ok(prefixed.remove(0)),
            0 => bail!("no dead letter with id {id} (bbb dead-letters list shows them)"),
            n => bail!("{n} dead letters have ids starting with {id}: give more of the id"),
        }
    }
}

pub async fn run(config: &Config, command: &DeadLettersCommand) -> anyhow::Result<()> {
    let list = DeadLetters::connect(config).await?;
    match command {
        DeadLettersCommand::List { limit, json } => {
            let total = list.len().await?;
            let stop = isize::try_from(*limit).unwrap_or(isize::MAX) - 1;
            let entries = if *limit == 0 {
                Vec::new()
            } else {
                list.range(0, stop).await?
            };
            if *json {
                let values: Vec<serde_json::Value> = entries
                    .iter()
                    .map(|e| {
                        serde_json::from_str(&e.raw)
                            .unwrap_or_else(|_| serde_json::Value::String(e.raw.clone()))
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&values)?);
            } else {
                print_list(&entries, total);
            }
        }
        DeadLettersCommand::Show { id, json } => {
            let (entry, letter) = list.find(id).await?;
            if *json {
                let value: serde_json::Value = serde_json::from_str(&entry.raw)?;
                println!("{}", serde_json::to_string_pretty(&value)?);
            } else {
                print!("{}", show(&letter));
            }
        }
        DeadLettersCommand::Requeue { id: Some(id), .. } => {
            let (entry, letter) = list.find(id).await?;
            let mut pulse = Pulse::default();
            let done = requeue(config, &list, &mut pulse, &entry, &letter).await;
            pulse.close().await;
            println!("{}", done?);
        }
        DeadLettersCommand::Requeue { id: None, .. } => {
            let mut pulse = Pulse::default();
            let (mut requeued, mut failed) = (0, 0);
            for entry in list.all().await? {
                let Some(letter) = entry.letter.clone() else {
                    eprintln!("kept an entry that is not a dead letter: {:.80}", entry.raw);
                    failed += 1;
                    continue;
                };
                match requeue(config, &list, &mut pulse, &entry, &letter).await {
                    Ok(done) => {
                        println!("{done}");
                        requeued += 1;
                    }
                    Err(e) => {
                        eprintln!("kept dead letter {}: {e:#}", letter.id);
                        failed += 1;
                    }
                }
            }
            pulse.close().await;
            println!("requeued {requeued}, kept {failed}");
            if failed > 0 {
                bail!("{} could not be requeued", letters(failed));
            }
        }
        DeadLettersCommand::Purge { id: Some(id), .. } => {
            let (entry, letter) = list.find(id).await?;
            if list.queue.remove_dead_letter(&entry.raw).await? {
                println!("purged dead letter {}", letter.id);
            } else {
                bail!("dead letter {} was removed meanwhile", letter.id);
            }
        }
        DeadLettersCommand::Purge { id: None, all } => {
            if !all {
                bail!("give the ID of the dead letter to purge, or --all to purge every one");
            }
            let purged = purge_all(&list).await?;
            println!("purged {}", letters(purged));
        }
    }
    Ok(())
}

/// Removes the entries present at the start, oldest first, each by its exact text; entries
/// pushed meanwhile stay.
async fn purge_all(list: &DeadLetters) -> anyhow::Result<usize> {
    let present = list.len().await?;
    let mut purged = 0;
    while purged < present {
        let want = isize::try_from(present - purged)
            .unwrap_or(isize::MAX)
            .min(CHUNK);
        let oldest = list.range(-want, -1).await?;
        if oldest.is_empty() {
            break;
        }
        let mut pipe = redis::pipe();
        for entry in &oldest {
            pipe.cmd("LREM").arg(&list.key).arg(-1).arg(&entry.raw);
        }
        let mut conn = list.conn.clone();
        let removed: Vec<usize> = pipe
            .query_async(&mut conn)
            .await
            .context("removing dead letters")?;
        let n: usize = removed.iter().sum();
        if n == 0 {
            break;
        }
        purged += n;
    }
    Ok(purged)
}

/// The AMQP connection for republishing, opened on first need. A failed publish closes its
/// channel (the broker does so on, e.g., a missing exchange): the next one opens another.
#[derive(Default)]
struct Pulse {
    conn: Option<lapin::Connection>,
    channel: Option<lapin::Channel>,
}

impl Pulse {
    async fn channel(&mut self, config: &Config) -> anyhow::Result<lapin::Channel> {
        if let Some(channel) = &self.channel {
            return Ok(channel.clone());
        }
        let conn = match self.conn.take() {
            Some(conn) => conn,
            None => lapin::Connection::connect(
                config.pulse.url.expose(),
                lapin::ConnectionProperties::default(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("connecting to Pulse at {}: {e}", config.pulse.url))?,
        };
        let channel = conn.create_channel().await;
        self.conn = Some(conn);
        let channel = channel.map_err(|e| anyhow::anyhow!("opening a channel: {e}"))?;
        channel
            .confirm_select(lapin::options::ConfirmSelectOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("enabling publisher confirms: {e}"))?;
        self.channel = Some(channel.clone());
        Ok(channel)
    }

    async fn close(self) {
        if let Some(conn) = self.conn {
            let _ = conn.close(200, "bbb dead-letters done".into()).await;
        }
    }
}

/// Requeues one entry, then removes it; says what was done.
async fn requeue(
    config: &Config,
    list: &DeadLetters,
    pulse: &mut Pulse,
    entry: &Entry,
    letter: &DeadLetter,
) -> anyhow::Result<String> {
    let id = &letter.id;
    let done = match letter.source.as_str() {
        "job" => {
            let Some(envelope) = &letter.envelope else {
                bail!("dead letter {id} has no job envelope to requeue");
            };
            let kind = letter.queue.as_str();
            if !BRIDGE_KINDS.contains(&kind) && kind != Probe::NAME {
                bail!("dead letter {id} names no known job kind ({kind:?}): not requeued");
            }
            let job_id = list
                .queue
                .requeue_dead_job(&letter.queue, envelope)
                .await
                .with_context(|| format!("requeueing dead letter {id}"))?;
            format!("requeued dead letter {id} as {} job {job_id}", letter.queue)
        }
        "ingest" => {
            let (Some(exchange), Some(routing_key), Some(body)) =
                (&letter.exchange, &letter.routing_key, &letter.body)
            else {
                bail!(
                    "dead letter {id} lacks its exchange, routing key or body: it cannot be republished"
                );
            };
            if letter.body_truncated {
                bail!(
                    "dead letter {id} kept only the start of its message body (ingest.dead_letter_body_limit): it cannot be republished; bbb dead-letters show {id} shows what was kept"
                );
            }
            republish(pulse, config, exchange, routing_key, body.as_bytes())
                .await
                .with_context(|| format!("republishing dead letter {id} to {exchange}"))?;
            format!("republished dead letter {id} to {exchange} ({routing_key})")
        }
        other => bail!("dead letter {id} has an unknown source {other:?}: not requeued"),
    };
    if !list.queue.remove_dead_letter(&entry.raw).await? {
        eprintln!("dead letter {id} was already removed by someone else");
    }
    Ok(done)
}

/// Publishes with a broker confirmation, `mandatory` so that a message no queue would receive
/// is an error rather than lost.
async fn republish(
    pulse: &mut Pulse,
    config: &Config,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
) -> anyhow::Result<()> {
    let channel = pulse.channel(config).await?;
    // lapin's errors print their cause in their own text: keep one copy.
    let flat = |e: lapin::Error| anyhow::anyhow!("{e}");
    let published = channel
        .basic_publish(
            exchange.into(),
            routing_key.into(),
            lapin::options::BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            body,
            lapin::BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2),
        )
        .await;
    let confirmation = match published {
        Ok(confirm) => confirm.await,
        Err(e) => Err(e),
    };
    let confirmation = match confirmation {
        Ok(c) => c,
        Err(e) => {
            pulse.channel = None;
            return Err(flat(e));
        }
    };
    match confirmation {
        lapin::Confirmation::Ack(None) => Ok(()),
        lapin::Confirmation::Ack(Some(_)) => {
            bail!("no queue is bound to receive routing key {routing_key}")
        }
        lapin::Confirmation::Nack(_) => bail!("the broker refused the message"),
        lapin::Confirmation::NotRequested => Ok(()),
    }
}

fn letters(n: usize) -> String {
    if n == 1 {
        "1 dead letter".to_owned()
    } else {
        format!("{n} dead letters")
    }
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() > max {
        format!("{}...", flat.chars().take(max - 3).collect::<String>())
    } else {
        flat
    }
}

fn print_list(entries: &[Entry], total: usize) {
    if entries.is_empty() {
        println!("no dead letters");
        return;
    }
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| match &e.letter {
            Some(l) => vec![
                l.id.clone(),
                l.failed_at.format("%Y-%m-%d %H:%M:%SZ").to_string(),
                l.source.clone(),
                l.queue.clone(),
                l.attempts.to_string(),
                one_line(&l.reason, 80),
            ],
            None => vec![
                "?".into(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                format!("not a dead letter: {}", one_line(&e.raw, 60)),
            ],
        })
        .collect();
    print!(
        "{}",
        table(
            &[
                ("id", Left),
                ("failed at", Left),
                ("source", Left),
                ("queue", Left),
                ("attempts", Right),
                ("reason", Left),
            ],
            &rows,
        )
    );
    println!(
        "{} of {total} shown; bbb dead-letters show ID prints one in full",
        entries.len()
    );
}

fn show(l: &DeadLetter) -> String {
    let mut out = String::new();
    let mut field = |name: &str, value: &str| out.push_str(&format!("{name:<12} {value}\n"));
    field("id:", &l.id);
    field("source:", &l.source);
    field("queue:", &l.queue);
    field(
        "failed at:",
        &l.failed_at.format("%Y-%m-%d %H:%M:%S%.3fZ").to_string(),
    );
    field("attempts:", &l.attempts.to_string());
    field("reason:", &l.reason);
    if let Some(exchange) = &l.exchange {
        field("exchange:", exchange);
    }
    if let Some(key) = &l.routing_key {
        field("routing key:", key);
    }
    if let Some(body) = &l.body {
        out.push_str(if l.body_truncated {
            "body (cut at the dead-letter body limit):\n"
        } else {
            "body:\n"
        });
        out.push_str(body);
        out.push('\n');
    }
    if let Some(envelope) = &l.envelope {
        out.push_str("envelope:\n");
        out.push_str(&serde_json::to_string_pretty(envelope).unwrap_or_default());
        out.push('\n');
    }
    out
}
