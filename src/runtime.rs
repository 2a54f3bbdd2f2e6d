//! The runtime builder: a topology plus custom stages → running processor and relay.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::watch;

use crate::config::{self, ConfigError, Loaded, Topology};
use crate::schema::registry::{Registry, RegistryError};
use crate::source::{self, Shared};
use crate::stage::{Stage, StageRunner};
use crate::store::{Store, StoreError};

/// Why the runtime could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A start-up step against Mongo (the URI is not repeated: it may hold credentials).
    #[error("mongo database `{database}`: {step}: {source}")]
    Mongo {
        step: &'static str,
        database: String,
        source: StoreError,
    },
    #[error("registry: {0}")]
    Registry(#[from] RegistryError),
    #[error("subject `{subject}`: {source}")]
    Register {
        subject: String,
        source: RegistryError,
    },
    #[error(transparent)]
    Topics(#[from] crate::topics::TopicError),
    #[error(transparent)]
    Source(#[from] source::SourceError),
    #[error(transparent)]
    Http(#[from] crate::http::HttpError),
    #[error(transparent)]
    Placement(#[from] crate::relay::placement::PlacementError),
    /// The rebalance callbacks claim partitions in Mongo from librdkafka's thread, which needs
    /// `block_in_place`: a current-thread runtime would panic there.
    #[error(
        "the processor needs tokio's multi-thread runtime (`#[tokio::main]`, not flavor = \"current_thread\")"
    )]
    CurrentThreadRuntime,
}

/// Which parts of the pipeline a process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roles {
    /// Processor, relay and the HTTP server.
    All,
    ProcessorOnly,
    RelayOnly,
    /// Only the HTTP server (ingress and queries).
    ServeOnly,
}

impl Roles {
    fn processor(self) -> bool {
        matches!(self, Roles::All | Roles::ProcessorOnly)
    }
    fn relay(self) -> bool {
        matches!(self, Roles::All | Roles::RelayOnly)
    }
    /// Ingress and query routes; every role serves the admin routes (metrics, health).
    fn api(self) -> bool {
        matches!(self, Roles::All | Roles::ServeOnly)
    }
}

/// Builds a runtime: `Runtime::builder("topology.toml").stage("pricing", my_stage).build()`.
pub struct RuntimeBuilder {
    topology: PathBuf,
    custom: HashMap<String, Arc<dyn Stage>>,
}

impl RuntimeBuilder {
    /// Registers a custom Rust stage under `name` (used as `kind = "name"` in topology.toml).
    pub fn stage(mut self, name: &str, stage: impl Stage) -> Self {
        self.custom.insert(name.to_string(), Arc::new(stage));
        self
    }

    /// The names of the registered custom stages (validation accepts these as stage kinds).
    pub fn custom_stage_names(&self) -> Vec<String> {
        self.custom.keys().cloned().collect()
    }

    /// Loads and validates the topology against the process environment and the registered stages.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let env = |name: &str| std::env::var(name).ok();
        config::load_with(&self.topology, &env, &self.custom_stage_names())
    }

    /// Connects to Mongo and the registry, creates collections, topics and subjects.
    pub async fn build(self) -> Result<Runtime, RuntimeError> {
        let loaded = self.load()?;
        for d in &loaded.diagnostics {
            tracing::info!("{d}");
        }
        let topology = Arc::new(loaded.topology);
        let mongo = |step: &'static str| {
            let database = topology.mongo.database.clone();
            move |source| RuntimeError::Mongo {
                step,
                database,
                source,
            }
        };
        let store = Store::connect(&topology.mongo.uri, &topology.mongo.database)
            .await
            .map_err(mongo("connecting"))?;
        store
            .ensure_collections(&topology)
            .await
            .map_err(mongo("creating collections and indexes"))?;
        crate::topics::ensure(&topology, 1).await?;
        let registry = Arc::new(Registry::new(
            &topology.registry.url,
            Duration::from_secs(10),
        )?);
        let schema_ids = register_schemas(&topology, &registry).await?;
        let runner = Arc::new(StageRunner::new(
            Arc::clone(&topology),
            self.custom,
            schema_ids,
        ));
        Ok(Runtime {
            topology,
            store,
            registry,
            runner,
        })
    }
}

/// Registers (or looks up) every schema the topology reads or emits and sets each subject's level.
async fn register_schemas(
    topology: &Topology,
    registry: &Registry,
) -> Result<HashMap<(String, String), u32>, RuntimeError> {
    let mut ids = HashMap::new();
    for crate::config::SubjectUse {
        topic,
        subject,
        schema,
    } in topology.subjects()
    {
        if ids.contains_key(&(topic.clone(), schema.full_name.clone())) {
            continue;
        }
        // Several processes may start at once and race on the same subject: retry a few times.
        let retry = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(Duration::from_millis(100))
            .with_max_times(6);
        let register_error = |source| RuntimeError::Register {
            subject: subject.clone(),
            source,
        };
        if topology.registry.auto_register {
            (|| registry.set_level(&subject, topology.registry.compatibility))
                .retry(retry)
                .when(|e: &RegistryError| !e.not_found)
                .await
                .map_err(register_error)?;
        }
        let id = (|| registry.register(&subject, &schema))
            .retry(retry)
            .when(|e: &RegistryError| !e.not_found)
            .await
            .map_err(register_error)?;
        ids.insert((topic, schema.full_name.clone()), id);
    }
    Ok(ids)
}

/// A started runtime: everything connected, ready to run.
pub struct Runtime {
    pub topology: Arc<Topology>,
    pub store: Store,
    pub registry: Arc<Registry>,
    pub runner: Arc<StageRunner>,
}

impl Runtime {
    pub fn builder(topology: impl AsRef<Path>) -> RuntimeBuilder {
        RuntimeBuilder {
            topology: topology.as_ref().to_path_buf(),
            custom: HashMap::new(),
        }
    }

    /// Runs the chosen roles until `stop` turns true, then finishes the batches in flight.
    pub async fn run(self, roles: Roles, stop: watch::Receiver<bool>) -> Result<(), RuntimeError> {
        if roles.processor()
            && tokio::runtime::Handle::current().runtime_flavor()
                == tokio::runtime::RuntimeFlavor::CurrentThread
        {
            return Err(RuntimeError::CurrentThreadRuntime);
        }
        let group = Arc::new(crate::source::GroupStatus::default());
        let http = {
            let state = crate::http::AppState {
                topology: Arc::clone(&self.topology),
                store: self.store.clone(),
                metrics: crate::metrics::install(),
                processor_group: roles.processor().then(|| Arc::clone(&group)),
            };
            let producer = if self.topology.ingress.is_empty() || !roles.api() {
                None
            } else {
                let deadline = self.topology.http.produce_timeout;
                Some(Arc::new(
                    crate::ingress::EventProducer::new(
                        Arc::clone(&self.topology),
                        Arc::clone(&self.registry),
                        deadline,
                    )
                    .map_err(crate::http::HttpError::from)?,
                ))
            };
            Some(crate::http::start(state, producer, roles.api(), stop.clone()).await?)
        };
        let inboxes = roles.relay().then(|| crate::relay::inboxes(&self.topology));
        let relay = match &inboxes {
            Some(inboxes) => {
                let placements =
                    crate::relay::placement::place(&self.topology, &self.store).await?;
                Some(tokio::spawn(crate::relay::run(
                    Arc::clone(&self.topology),
                    self.store.clone(),
                    (Arc::clone(inboxes), placements),
                    stop.clone(),
                )))
            }
            None => None,
        };
        let processed = if roles.processor() {
            let shared = Arc::new(Shared {
                store: self.store.clone(),
                registry: Arc::clone(&self.registry),
                runner: Arc::clone(&self.runner),
                group,
                commit_slots: Arc::new(tokio::sync::Semaphore::new(
                    self.topology.mongo.max_concurrent_batches,
                )),
                relay_inboxes: inboxes,
            });
            source::run(Arc::clone(&self.topology), shared, stop.clone()).await
        } else {
            let mut stop = stop.clone();
            let _ = stop.wait_for(|s| *s).await;
            Ok(())
        };
        if processed.is_err() {
            // the processor failed: stop the rest too, so the process exits and restarts whole
            tracing::error!("processor stopped with an error; stopping the relay and the server");
            if let Some(r) = &relay {
                r.abort();
            }
            if let Some(h) = &http {
                h.abort();
            }
            return Ok(processed?);
        }
        if let Some(relay) = relay {
            let _ = relay.await;
        }
        if let Some(http) = http
            && let Err(e) = http.await
        {
            tracing::error!("http server task failed: {e}");
        }
        Ok(())
    }
}
