//! Fresh databases on every engine are gone once dropped, also while a
//! connection is still open on them and from within a test's runtime.

use std::path::PathBuf;

use agentmesh_testkit::engines::{Engine, fresh_databases};
use sqlx::{AnyConnection, Connection, Executor, Row};

#[tokio::test]
async fn fresh_databases_are_removed_when_dropped() {
    let databases = fresh_databases("testkit_test").await;
    assert_eq!(databases[0].engine(), Engine::Sqlite, "SQLite always comes first");
    for database in databases {
        match database.engine() {
            Engine::Sqlite => {
                let path = PathBuf::from(database.url().strip_prefix("sqlite://").expect("a SQLite URL"));
                std::fs::write(&path, b"").unwrap();
                drop(database);
                assert!(!path.exists(), "{} is removed", path.display());
            }
            Engine::Postgres => {
                let name = database.url().rsplit_once('/').expect("a database in the URL").1.to_owned();
                let mut open = AnyConnection::connect(database.url()).await.unwrap();
                open.execute("CREATE TABLE t (x INTEGER)").await.unwrap();
                drop(database);
                let admin = agentmesh_testkit::postgres::admin_url().expect("configured, or there is no database");
                let mut admin = AnyConnection::connect(&admin).await.unwrap();
                let left: i64 = sqlx::query("SELECT count(*) FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_one(&mut admin)
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(left, 0, "{name} is dropped");
            }
        }
    }
}
