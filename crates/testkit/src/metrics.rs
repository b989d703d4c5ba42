//! Reading what a service serves at `/metrics`.

use std::net::SocketAddr;

/// The metrics text served at `http://{address}/metrics`.
pub async fn scrape(address: SocketAddr) -> String {
    let response = reqwest::get(format!("http://{address}/metrics")).await.expect("the metrics listener answers");
    assert!(response.status().is_success(), "GET /metrics: {}", response.status());
    let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
    assert!(content_type.starts_with("application/openmetrics-text"), "content type {content_type:?}");
    response.text().await.expect("a text body")
}

/// The value of the sample `name` whose labels include every pair of
/// `labels`, if the text has one.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.strip_suffix('}')?),
            None => (series, ""),
        };
        let matches = series_name == name
            && labels.iter().all(|(key, value)| series_labels.contains(&format!("{key}=\"{value}\"")));
        if matches { value.parse().ok() } else { None }
    })
}
