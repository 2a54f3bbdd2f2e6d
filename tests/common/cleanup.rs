//! Removes a test's topics and databases when its `TestTopology` is dropped, so a developer's
//! stack does not grow with every run (a few days of runs left 1,349 partitions in the broker).

use std::time::Duration;

use mongodb::bson::doc;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

/// The benchmark's clean-up: the same deletes, and a database's open transactions (left by a
/// killed processor) ended first instead of waited for.
#[path = "../../src/bin/outflow-bench/cleanup.rs"]
mod removal;

/// At most this long: a server a test left down must not hold up the suite.
const LIMIT: Duration = Duration::from_secs(20);

/// Deletes every topic and database whose name holds `prefix` (the relay's checkpoint topic is
/// `outflow-it-<prefix>.relay-checkpoints`; some tests add `<prefix>-moved` databases). Runs on a
/// thread of its own, as `Drop` may run inside a test's runtime, and gives up after [`LIMIT`].
pub fn remove_artefacts(prefix: &str) {
    let prefix = prefix.to_string();
    let (done, finished) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            // the timer is made inside the runtime: `timeout` needs its clock
            let outcome =
                runtime.block_on(async { tokio::time::timeout(LIMIT, remove(&prefix)).await });
            if let Ok(Err(e)) | Err(e) = outcome.map_err(|e| e.to_string()) {
                eprintln!("clean-up of {prefix}: {e} (left behind)");
            }
        }
        let _ = done.send(());
    });
    // a hang in a client's destructor stays on that thread
    let _ = finished.recv_timeout(LIMIT + Duration::from_secs(5));
}

async fn remove(prefix: &str) -> Result<(), String> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", super::env("OUTFLOW_KAFKA_BROKERS"))
        .create()
        .map_err(|e| format!("kafka admin: {e}"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(10))
        .map_err(|e| format!("kafka metadata: {e}"))?;
    let topics: Vec<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_string())
        .filter(|name| name.contains(prefix))
        .collect();
    if !topics.is_empty() {
        removal::delete_topics(&admin, &topics).await;
    }
    let uri = super::env("OUTFLOW_MONGO_URI");
    let databases = mongodb::Client::with_uri_str(&uri)
        .await
        .map_err(|e| format!("mongo: {e}"))?
        .list_database_names()
        .filter(doc! { "name": { "$regex": format!("^{prefix}") } })
        .await
        .map_err(|e| format!("list databases: {e}"))?;
    for name in databases {
        removal::drop_database(&uri, &name).await;
    }
    Ok(())
}
