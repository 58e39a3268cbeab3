//! Publishing on Pulse (RabbitMQ) as Taskcluster and Mozilla's masters do: topic exchanges,
//! durable, persistent JSON messages. Exchanges are declared on first use (a development
//! broker has none).
use std::{collections::HashSet, sync::Arc};

use bbb_shared::secret::SecretUrl;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions},
    types::FieldTable,
};
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

struct Inner {
    url: SecretUrl,
    state: Mutex<Option<(Connection, Channel)>>,
    declared: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Publisher({})", self.inner.url)
    }
}

impl Publisher {
    pub async fn connect(url: &SecretUrl) -> anyhow::Result<Self> {
        let p = Self {
            inner: Arc::new(Inner {
                url: url.clone(),
                state: Mutex::new(None),
                declared: Mutex::new(HashSet::new()),
            }),
        };
        p.channel().await?;
        Ok(p)
    }

    async fn channel(&self) -> anyhow::Result<Channel> {
        let mut state = self.inner.state.lock().await;
        if let Some((conn, ch)) = state.as_ref()
            && conn.status().connected()
            && ch.status().connected()
        {
            return Ok(ch.clone());
        }
        let conn = Connection::connect(self.inner.url.expose(), ConnectionProperties::default())
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", self.inner.url))?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        *state = Some((conn, ch.clone()));
        self.inner.declared.lock().await.clear();
        Ok(ch)
    }

    /// Publishes `body` (JSON) and waits for the broker's confirmation.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<()> {
        self.publish_raw(exchange, routing_key, &serde_json::to_vec(body)?)
            .await
    }

    pub async fn publish_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let ch = self.channel().await?;
        if !self.inner.declared.lock().await.contains(exchange) {
            ch.exchange_declare(
                exchange.into(),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
            self.inner.declared.lock().await.insert(exchange.to_owned());
        }
        ch.basic_publish(
            exchange.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            body,
            BasicProperties::default()
                .with_content_type("application/json".into())
                .with_content_encoding("utf-8".into())
                .with_delivery_mode(2),
        )
        .await?
        .await?;
        Ok(())
    }
}
