//! The database engines a store is tested on: SQLite always, PostgreSQL
//! where configured (see [`crate::postgres`]), each as a fresh, empty
//! database that is removed afterwards. [`on_every_engine!`](crate::on_every_engine)
//! turns store scenarios into one test each that runs on every engine.

use std::fmt;

/// A database engine the stores run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Sqlite => "sqlite",
            Self::Postgres => "postgres",
        })
    }
}

/// A fresh, empty database on one engine, removed when dropped (on a
/// failed test too): the SQLite file with its temp dir, the PostgreSQL
/// database with whatever sessions are still open on it.
#[derive(Debug)]
pub struct TestDatabase {
    engine: Engine,
    url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDatabase {
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// The URL to connect the store to.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.engine != Engine::Postgres {
            return;
        }
        // Dropping cannot await, nor block the test's runtime from within it:
        // the database is dropped on a runtime and thread of its own. A
        // failure there is only reported, so that it neither hides the test's
        // own outcome nor panics while a failed test unwinds.
        let url = self.url.clone();
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("building a runtime to drop the database")
                .block_on(crate::postgres::drop_database(&url));
        })
        .join();
        if dropped.is_err() {
            eprintln!("agentmesh-testkit: {} was not dropped", self.url);
        }
    }
}

/// A fresh database on every engine: SQLite always, PostgreSQL when
/// configured (in CI it must be). `prefix` names the PostgreSQL database
/// (`<prefix>_<random>`) and the SQLite file.
pub async fn fresh_databases(prefix: &str) -> Vec<TestDatabase> {
    let dir = tempfile::tempdir().expect("creating a temp dir for SQLite");
    let url = format!("sqlite://{}", dir.path().join(format!("{prefix}.db")).display());
    let mut databases = vec![TestDatabase { engine: Engine::Sqlite, url, _dir: Some(dir) }];
    if let Some(url) = crate::postgres::fresh_database(prefix).await {
        databases.push(TestDatabase { engine: Engine::Postgres, url, _dir: None });
    }
    databases
}

/// Turns store scenarios into one test each that runs the scenario on a
/// fresh database of every engine
/// ([`fresh_databases`](crate::engines::fresh_databases)), in a module
/// `on_every_engine`:
///
/// ```ignore
/// agentmesh_testkit::on_every_engine!(database = "gateway_test", backend = Backend; scenario_a, scenario_b);
/// ```
///
/// `backend` names a type of the calling module with an `async fn
/// open(TestDatabase) -> Self` that opens the store under test; each
/// scenario is an `async fn(&Backend)` of the calling module. The tests run
/// on a multi-thread tokio runtime, so the calling crate needs tokio with
/// its macros.
#[macro_export]
macro_rules! on_every_engine {
    (database = $prefix:literal, backend = $backend:ident; $($scenario:ident),* $(,)?) => {
        mod on_every_engine { $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $scenario() {
                for database in $crate::engines::fresh_databases($prefix).await {
                    eprintln!("{} on {}", stringify!($scenario), database.engine());
                    let backend = super::$backend::open(database).await;
                    super::$scenario(&backend).await;
                }
            }
        )* }
    };
}
