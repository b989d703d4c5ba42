//! Opens a service's store: an embedded SQLite file by default (nothing to
//! install), PostgreSQL when configured (ARCH-2).
//!
//! Services write their SQL once, in the subset both engines understand
//! (`$1` placeholders, `RETURNING`, `ON CONFLICT`), and run it through one
//! `AnyPool`. The few places where the engines differ ask [`Dialect`].
//! Statements assembled at run time go through [`Sql`].

mod sql;

use std::{path::Path, str::FromStr, time::Duration};

use sqlx::{
    Any, AnyPool, Executor, Transaction,
    any::AnyPoolOptions,
    migrate::{MigrateError, Migrator},
};

pub use sql::Sql;

/// Which engine a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database url (expected sqlite: or postgres://)")]
    UnsupportedUrl,
    #[error("cannot create the directory of the SQLite file: {0}")]
    CreateDir(#[source] std::io::Error),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
    #[error("migrating the schema failed: {0}")]
    Migrate(#[from] MigrateError),
}

/// How a store's statement or migration failed, told apart by whether
/// retrying later may help. Each service's store error holds one, so the
/// classification lives here once.
#[derive(Debug, thiserror::Error)]
pub enum StoreFailure {
    /// The database cannot be reached (or refuses connections for now);
    /// retrying later may succeed.
    #[error("the store is unavailable")]
    Unavailable(#[source] sqlx::Error),
    #[error("the store failed")]
    Database(#[source] sqlx::Error),
    /// Bringing the schema up to date failed other than by a statement.
    #[error("migrating the store failed")]
    Migrate(#[source] DbError),
}

impl StoreFailure {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreFailure::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreFailure {
    fn from(e: sqlx::Error) -> Self {
        if unavailable(&e) { StoreFailure::Unavailable(e) } else { StoreFailure::Database(e) }
    }
}

impl From<DbError> for StoreFailure {
    fn from(e: DbError) -> Self {
        match e {
            // A migration whose statement failed failed like any statement:
            // an unreachable database stays retryable.
            DbError::Sqlx(e) | DbError::Migrate(MigrateError::Execute(e)) => e.into(),
            other => StoreFailure::Migrate(other),
        }
    }
}

/// A connection pool and the engine behind it.
#[derive(Clone, Debug)]
pub struct Database {
    pool: AnyPool,
    dialect: Dialect,
}

impl Database {
    /// Connects to `url` (`sqlite://path` or `postgres://…`), creating the
    /// SQLite file and its directory when missing.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let dialect: Dialect = url.parse()?;
        let pool = match dialect {
            Dialect::Sqlite => {
                let path = url.trim_start_matches("sqlite://").trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or_default();
                if let Some(dir) = Path::new(path).parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(DbError::CreateDir)?;
                }
                let url = if url.contains('?') { url.to_owned() } else { format!("{url}?mode=rwc") };
                // One connection: SQLite has a single writer anyway, and a
                // lone connection never meets SQLITE_BUSY on a read-to-write
                // upgrade, which no busy timeout can resolve.
                AnyPoolOptions::new()
                    .max_connections(1)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Dialect::Postgres => {
                let options = AnyPoolOptions::new().max_connections(16).acquire_timeout(Duration::from_secs(5));
                match options.clone().connect(url).await {
                    // A new installation names its databases and lets each
                    // service create its own, as SQLite files are created.
                    Err(e) if database_missing(&e) => {
                        create_postgres_database(url).await?;
                        options.connect(url).await?
                    }
                    connected => connected?,
                }
            }
        };
        Ok(Self { pool, dialect })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// Applies the migrations of this database's engine.
    pub async fn migrate(&self, sqlite: &Migrator, postgres: &Migrator) -> Result<(), DbError> {
        let migrator = match self.dialect {
            Dialect::Sqlite => sqlite,
            Dialect::Postgres => postgres,
        };
        migrator.run(&self.pool).await?;
        Ok(())
    }

    /// Begins a transaction that commits in order with every other
    /// transaction begun with the same `lock_key`, across replicas.
    ///
    /// Rows numbered by a sequence inside such transactions become visible
    /// in number order, so a reader that tails them by number never skips
    /// one that commits late. SQLite has one writer, so it only needs the
    /// write lock taken at the start.
    pub async fn begin_ordered(&self, lock_key: i64) -> Result<Transaction<'static, Any>, DbError> {
        match self.dialect {
            Dialect::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock_key).execute(&mut *tx).await?;
                Ok(tx)
            }
            Dialect::Sqlite => self.begin_write().await,
        }
    }

    /// Begins a transaction that reads, then writes what it read.
    ///
    /// On SQLite it takes the write lock at once: the busy timeout then
    /// queues writers from other processes, whereas a deferred transaction
    /// that upgrades later fails at once with SQLITE_BUSY. PostgreSQL needs
    /// nothing special; the statements lock the rows they read.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, DbError> {
        match self.dialect {
            Dialect::Postgres => Ok(self.pool.begin().await?),
            Dialect::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
        }
    }

    /// Whether the store answers.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

fn postgres_code(e: &sqlx::Error) -> Option<String> {
    match e {
        sqlx::Error::Database(db) => {
            db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().map(|pg| pg.code().to_owned())
        }
        _ => None,
    }
}

/// PostgreSQL's "invalid catalog name": the URL names no database.
fn database_missing(e: &sqlx::Error) -> bool {
    postgres_code(e).as_deref() == Some("3D000")
}

/// Creates the database `url` names. Replicas starting together may race
/// to it; the losers find it created ("duplicate database", or a unique
/// violation on the catalog when the race is that close).
async fn create_postgres_database(url: &str) -> Result<(), DbError> {
    use sqlx::migrate::MigrateDatabase;
    match sqlx::Postgres::create_database(url).await {
        Ok(()) => {
            tracing::info!("created the store's PostgreSQL database");
            Ok(())
        }
        Err(e) if matches!(postgres_code(&e).as_deref(), Some("42P04" | "23505")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Whether an error means "the database is not there right now" rather than
/// "this statement is wrong": retrying later may succeed.
pub fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => {
            if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
                // Connection exceptions, shutdown and "cannot connect now",
                // too many connections.
                let code = pg.code();
                code.starts_with("08") || code.starts_with("57P") || code == "53300"
            } else if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLITE_BUSY / SQLITE_LOCKED (any extended code): another
                // process held the file past the busy timeout.
                let code = db.code().and_then(|c| c.parse::<i32>().ok()).unwrap_or_default();
                matches!(code & 0xff, 5 | 6)
            } else {
                false
            }
        }
        _ => false,
    }
}

impl FromStr for Dialect {
    type Err = DbError;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Dialect::Postgres)
        } else {
            Err(DbError::UnsupportedUrl)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_postgres_database_that_does_not_exist_yet_is_created_once_by_racing_replicas() {
        let Some(admin) = agentmesh_testkit::postgres::admin_url() else { return };
        let base = admin.rsplit_once('/').map(|(base, _)| base).unwrap();
        let name = format!("gateway_test_created_{}", std::process::id());
        let url = format!("{base}/{name}");
        let replicas = (0..3).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { Database::connect(&url).await.map(|db| db.dialect()) })
        });
        for replica in replicas {
            assert_eq!(replica.await.unwrap().unwrap(), Dialect::Postgres);
        }
        Database::connect(&url).await.unwrap().ping().await.unwrap();
        agentmesh_testkit::postgres::drop_database(&url).await;
    }

    #[test]
    fn a_lost_connection_is_unavailable_and_a_broken_statement_is_not() {
        let lost = StoreFailure::from(sqlx::Error::PoolTimedOut);
        assert!(matches!(lost, StoreFailure::Unavailable(sqlx::Error::PoolTimedOut)), "{lost:?}");
        assert!(lost.is_unavailable());
        let broken = StoreFailure::from(sqlx::Error::Protocol("unexpected frame".to_owned()));
        assert!(matches!(broken, StoreFailure::Database(sqlx::Error::Protocol(_))), "{broken:?}");
        assert!(!broken.is_unavailable());
    }

    #[test]
    fn a_db_error_is_classified_by_the_statement_error_inside() {
        let closed = StoreFailure::from(DbError::Sqlx(sqlx::Error::PoolClosed));
        assert!(matches!(closed, StoreFailure::Unavailable(sqlx::Error::PoolClosed)), "{closed:?}");
        let migrating = StoreFailure::from(DbError::Migrate(MigrateError::Execute(sqlx::Error::PoolTimedOut)));
        assert!(migrating.is_unavailable(), "{migrating:?}");
        let failed = StoreFailure::from(DbError::Migrate(MigrateError::Execute(sqlx::Error::RowNotFound)));
        assert!(matches!(failed, StoreFailure::Database(sqlx::Error::RowNotFound)), "{failed:?}");
        let dirty = StoreFailure::from(DbError::Migrate(MigrateError::Dirty(3)));
        assert!(matches!(dirty, StoreFailure::Migrate(DbError::Migrate(MigrateError::Dirty(3)))), "{dirty:?}");
        assert!(!dirty.is_unavailable());
    }
}
