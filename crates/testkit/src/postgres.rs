//! Throwaway PostgreSQL databases for tests. The server is named by
//! `AGENTMESH_TEST_POSTGRES_URL` (an admin URL on which tests may create
//! databases); CI sets it, and there a missing server fails the test
//! instead of skipping it.

/// The variable naming the admin URL.
pub const POSTGRES_ENV: &str = "AGENTMESH_TEST_POSTGRES_URL";

/// The admin URL, or `None` (with a note on stderr) where PostgreSQL is not
/// configured and this is not CI.
pub fn admin_url() -> Option<String> {
    match std::env::var(POSTGRES_ENV) {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(std::env::var_os("CI").is_none(), "{POSTGRES_ENV} must be set in CI");
            eprintln!("skipping PostgreSQL: {POSTGRES_ENV} is not set");
            None
        }
    }
}

/// A new, empty database named `<prefix>_<random>` (CI drops leftovers by
/// prefix), and its URL; `None` where PostgreSQL is not configured.
pub async fn fresh_database(prefix: &str) -> Option<String> {
    let admin = admin_url()?;
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("CREATE DATABASE {name}").as_str()).await.unwrap();
    let base = admin.rsplit_once('/').map(|(base, _)| base).expect("the admin URL names a database");
    Some(format!("{base}/{name}"))
}

/// Drops a database made by [`fresh_database`], closing its sessions first.
pub async fn drop_database(url: &str) {
    let (Some(admin), Some((_, name))) = (admin_url(), url.rsplit_once('/')) else { return };
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&admin).await.unwrap();
    sqlx::Executor::execute(&mut conn, format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str()).await.unwrap();
}
