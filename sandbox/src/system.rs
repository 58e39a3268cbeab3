//! All three emulators together, configured from the bridge's own config file: the queue at
//! `taskcluster_queue_config.rootUrl`, self-serve at `selfserve_url`, `allthethings.json` at
//! `allowed_builders_url`, the masters on the configured scheduler DB and Buildbot exchange.
//! What `bbb sandbox` runs, and what end-to-end tests and the demo start.
use std::net::{SocketAddr, ToSocketAddrs};

use anyhow::Context;
use bbb_shared::config::Config;

use crate::{
    buildbot::{MasterSettings, Masters},
    clock::Clock,
    pulse::Publisher,
    selfserve::{HttpServer, SelfServe, allthethings_router, serve},
    settings::SandboxSettings,
    tc::{TcQueue, TcSettings},
};

/// Which emulators to run (each can run alone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub tc: bool,
    pub buildbot: bool,
    pub selfserve: bool,
}

impl Parts {
    pub const ALL: Parts = Parts {
        tc: true,
        buildbot: true,
        selfserve: true,
    };
}

pub struct Sandbox {
    pub clock: Clock,
    pub tc: Option<TcQueue>,
    pub masters: Masters,
    pub selfserve: Option<SelfServe>,
    /// `allthethings.json` on its own listener, when its URL names another address.
    pub allthethings: Option<HttpServer>,
    pub settings: SandboxSettings,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("tc", &self.tc.as_ref().map(TcQueue::root_url))
            .field("selfserve", &self.selfserve.as_ref().map(SelfServe::addr))
            .finish_non_exhaustive()
    }
}

/// `host:port` of a URL, resolved for binding.
fn listen_addr(url: &url::Url, what: &str) -> anyhow::Result<SocketAddr> {
    let host = url
        .host_str()
        .with_context(|| format!("{what} {url} has no host"))?;
    let port = url
        .port_or_known_default()
        .with_context(|| format!("{what} {url} has no port"))?;
    (host, port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {what} {url}"))?
        .next()
        .with_context(|| format!("{what} {url} resolves to no address"))
}

impl Sandbox {
    pub async fn start(config: &Config) -> anyhow::Result<Sandbox> {
        Self::start_parts(config, Parts::ALL).await
    }

    pub async fn start_parts(config: &Config, parts: Parts) -> anyhow::Result<Sandbox> {
        let settings = SandboxSettings::from_section(config.sandbox.as_ref())?;
        let clock = Clock::new();
        let publisher = Publisher::connect(&config.pulse.url).await?;
        let root = url::Url::parse(&config.taskcluster.root_url)
            .with_context(|| format!("rootUrl {}", config.taskcluster.root_url))?;
        let tc = if !parts.tc {
            None
        } else {
            Some(
                TcQueue::start(
                    TcSettings {
                        listen: listen_addr(&root, "rootUrl")?,
                        root_url: config.taskcluster.root_url.clone(),
                        exchange_basename: config.tclistener.pulse_exchange_basename.clone(),
                        clients: settings.clients.clone(),
                        claim_timeout: settings.claim_timeout,
                    },
                    (
                        config.taskcluster.client_id.clone(),
                        config.taskcluster.access_token.expose().clone(),
                    ),
                    clock.clone(),
                    publisher.clone(),
                )
                .await?,
            )
        };
        let db = &config.buildbot_scheduler_db;
        let exchange = &config.bblistener.pulse_exchange;
        let count = if parts.buildbot { settings.masters } else { 0 };
        let masters = Masters::start_all(
            (1..=count)
                .map(|i| MasterSettings::sandbox(i, &settings, exchange))
                .collect(),
            db,
            &clock,
            &publisher,
        )
        .await?;
        if !parts.selfserve {
            return Ok(Sandbox {
                clock,
                tc,
                masters,
                selfserve: None,
                allthethings: None,
                settings,
            });
        }
        let selfserve_addr = listen_addr(&config.selfserve_url, "selfserve_url")?;
        let (att_path, att_server) = match &config.allowed_builders_url {
            Some(url) if listen_addr(url, "allowed_builders_url")? == selfserve_addr => {
                (url.path().to_owned(), None)
            }
            Some(url) => {
                let server = serve(
                    listen_addr(url, "allowed_builders_url")?,
                    allthethings_router(url.path(), &settings.builders),
                )
                .await?;
                ("/_unused/allthethings.json".to_owned(), Some(server))
            }
            None => ("/allthethings.json".to_owned(), None),
        };
        let selfserve = SelfServe::start(
            selfserve_addr,
            config.selfserve_url.path(),
            &att_path,
            settings.builders.clone(),
            db,
            masters.clone(),
            clock.clone(),
            settings.selfserve_fresh_404,
        )
        .await?;
        tracing::info!(
            "sandbox: self-serve at {}, {count} master(s) serving {} builder(s)",
            config.selfserve_url,
            settings.builders.len()
        );
        Ok(Sandbox {
            clock,
            tc,
            masters,
            selfserve: Some(selfserve),
            allthethings: att_server,
            settings,
        })
    }

    pub async fn shutdown(self) {
        self.masters.shutdown().await;
        if let Some(s) = self.selfserve {
            s.shutdown().await;
        }
        if let Some(s) = self.allthethings {
            s.shutdown().await;
        }
        if let Some(tc) = self.tc {
            tc.shutdown().await;
        }
    }
}
