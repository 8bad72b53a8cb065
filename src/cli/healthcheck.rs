//! `sqs-batch-worker healthcheck`: exit 0 when the local `/healthz` answers 200.

use std::time::Duration;

pub async fn healthcheck(listen: &str) -> Result<(), String> {
    let url = format!("http://{listen}/healthz");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("{url} answered {}", response.status())),
        Err(error) => Err(format!("{url} did not answer: {}", error.without_url())),
    }
}
