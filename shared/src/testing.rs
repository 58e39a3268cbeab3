//! Test support (cargo feature `testing`): a fresh, empty database per test on the real
//! servers, so tests run in parallel without seeing each other's rows.
//!
//! Servers: `BBB_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) and
//! `BBB_TEST_MYSQL_URL` (default `mysql://root@127.0.0.1:3306/`) name a server and a user
//! allowed to create databases; SQLite uses a file in the temporary directory.
//!
//! ```ignore
//! let db = TestDb::create(Engine::MySql).await?;      // CREATE DATABASE bbb_test_<random>
//! let bridge = BridgeDb::connect(db.url()).await?;
//! // ... dropped at the end of the test: DROP DATABASE / file removed.
//! ```
use std::path::PathBuf;

use anyhow::Context as _;
use sqlx::{AssertSqlSafe, Connection as _};

use crate::dburl::{DbUrl, Engine};

/// Every engine, for tests that loop over them.
pub const ALL_ENGINES: [Engine; 3] = [Engine::Postgres, Engine::MySql, Engine::Sqlite];

const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/";

/// A database made for one test, removed when dropped.
pub struct TestDb {
    url: DbUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    /// Drop the database `name` through the server URL `admin`.
    Server {
        engine: Engine,
        admin: String,
        name: String,
    },
    /// Remove the SQLite file and its WAL companions.
    File(PathBuf),
}

impl TestDb {
    /// Creates an empty database named `bbb_test_<random>` on the engine's server (SQLite: a
    /// new temporary file).
    pub async fn create(engine: Engine) -> anyhow::Result<TestDb> {
        let name = format!("bbb_test_{:016x}", rand::random::<u64>());
        match engine {
            Engine::Sqlite => {
                let path = std::env::temp_dir().join(format!("{name}.db"));
                // SQLAlchemy form: four slashes for an absolute path.
                let url = DbUrl::parse(&format!("sqlite:///{}", path.display()))?;
                Ok(TestDb {
                    url,
                    cleanup: Cleanup::File(path),
                })
            }
            Engine::Postgres | Engine::MySql => {
                let admin = admin_url(engine);
                let create = format!("CREATE DATABASE {name}");
                execute_on_server(engine, &admin, &create)
                    .await
                    .with_context(|| format!("creating test database {name} on {engine}"))?;
                let mut url = url::Url::parse(&admin).context("test server URL")?;
                url.set_path(&format!("/{name}"));
                Ok(TestDb {
                    url: DbUrl::parse(url.as_str())?,
                    cleanup: Cleanup::Server {
                        engine,
                        admin,
                        name,
                    },
                })
            }
        }
    }

    pub fn url(&self) -> &DbUrl {
        &self.url
    }

    pub fn engine(&self) -> Engine {
        self.url.engine()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        match &self.cleanup {
            Cleanup::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut file = path.clone().into_os_string();
                    file.push(suffix);
                    let _ = std::fs::remove_file(file);
                }
            }
            Cleanup::Server {
                engine,
                admin,
                name,
            } => {
                let (engine, admin) = (*engine, admin.clone());
                let drop = match engine {
                    // FORCE: pools the test did not close may still hold connections.
                    Engine::Postgres => format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                    _ => format!("DROP DATABASE IF EXISTS {name}"),
                };
                // Drop runs inside the test's runtime, which cannot be blocked on: use a
                // runtime of its own on another thread. A failure leaves a stray database
                // behind, which is not worth failing a test for.
                let dropper = std::thread::spawn(move || {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build();
                    if let Ok(runtime) = runtime {
                        let _ = runtime.block_on(execute_on_server(engine, &admin, &drop));
                    }
                });
                let _ = dropper.join();
            }
        }
    }
}

fn admin_url(engine: Engine) -> String {
    let (var, default) = match engine {
        Engine::Postgres => ("BBB_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        _ => ("BBB_TEST_MYSQL_URL", DEFAULT_MYSQL_URL),
    };
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

/// Runs one statement on a single connection to the server. `sql` is built by this module
/// from a generated name, never from outside input.
async fn execute_on_server(engine: Engine, admin: &str, sql: &str) -> anyhow::Result<()> {
    let masked = crate::secret::mask_url(admin);
    match engine {
        Engine::Postgres => {
            let mut conn = sqlx::PgConnection::connect(admin)
                .await
                .with_context(|| format!("connecting to {masked}"))?;
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        Engine::MySql => {
            let mut conn = sqlx::MySqlConnection::connect(admin)
                .await
                .with_context(|| format!("connecting to {masked}"))?;
            sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
                .execute(&mut conn)
                .await?;
            conn.close().await?;
        }
        Engine::Sqlite => anyhow::bail!("SQLite has no server"),
    }
    Ok(())
}
