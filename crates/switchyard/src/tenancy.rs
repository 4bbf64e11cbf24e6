//! Per-customer instances in the running pipeline (docs/tenancy.md): how each connector's
//! instances are built from the settings, what each is wired to, and their isolation.
//! Routing an event to its customer's instance is core's (`switchyard_core::tenancy`).

use crate::settings::{ConnectorSettings, Settings, Unknown};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use switchyard_core::stats::Health;
use switchyard_core::{
    Acker, ConnectorHandle, ConnectorIndex, ConnectorStats, DeadLetters, Fallback, Instance,
    Instances, Isolation, PerCustomer, Reach, Refusals, Role, Start, TimingRecorder, Wiring,
};
use switchyard_http::ClientOptions;

/// An instance's part in isolation, by connector id and customer (None: the shared one).
pub type RoleOf = Arc<dyn Fn(&str, Option<&str>) -> Option<Role> + Send + Sync>;

/// What every instance of one flow is wired to.
#[derive(Clone)]
pub struct Kit {
    pub runtime: tokio::runtime::Handle,
    pub acker: Arc<Acker>,
    pub timings: Arc<TimingRecorder>,
    pub dead_letters: Option<Arc<dyn DeadLetters>>,
    pub role_of: RoleOf,
}

/// One connector of one flow, with per-customer instances.
pub struct Tenanted {
    pub connector: Arc<PerCustomer>,
    pub refusals: Refusals,
    index: ConnectorIndex,
    /// The client the connector's own settings build, shared by every instance whose
    /// settings build the same one.
    client: ClientOptions,
    kit: Kit,
}

impl Tenanted {
    /// Connector `c` of `settings`, its shared instance started (if it is enabled).
    pub fn start(
        c: &ConnectorSettings,
        settings: &Settings,
        index: ConnectorIndex,
        kit: Kit,
    ) -> Self {
        let stats = Arc::new(ConnectorStats::default());
        if !c.enabled || !c.engine.health_check.enabled {
            stats.set_health(Health::Unchecked);
        }
        let refusals = Refusals {
            connector: Arc::from(c.id.as_str()),
            index,
            acker: kit.acker.clone(),
            dead_letters: kit.dead_letters.clone(),
            stats: stats.clone(),
            notices: Arc::new(switchyard_core::log::Throttle::new(
                std::time::Duration::from_secs(60),
            )),
        };
        let this = Tenanted {
            connector: Arc::new(PerCustomer::new(
                &c.id,
                stats,
                Instances::none(),
                settings.tenants.metrics_label_limit,
            )),
            refusals,
            index,
            client: c.client.sharing_one_client(),
            kit,
        };
        this.connector.replace(this.instances(c, settings));
        this
    }

    /// How the dispatcher reaches this connector.
    pub fn reach(&self) -> Reach {
        Reach::PerCustomer {
            connector: self.connector.clone(),
            refusals: self.refusals.clone(),
        }
    }

    /// Applies a new version of the settings; returns how many running instances it closed.
    pub fn reload(&self, c: &ConnectorSettings, settings: &Settings) -> usize {
        self.connector.replace(self.instances(c, settings))
    }

    /// The instances of connector `c` under `settings`: its own, and each customer's.
    fn instances(&self, c: &ConnectorSettings, settings: &Settings) -> Instances {
        let tenants = &settings.tenants;
        let shared = c.enabled.then(|| self.instance(c, None));
        let by_customer = tenants
            .by_customer
            .values()
            .filter_map(|t| {
                let own = t.connectors.iter().find(|own| own.id == c.id)?;
                let instance = own
                    .enabled
                    .then(|| self.instance(own, Some(&t.customer_code)));
                Some((Arc::from(t.customer_code.as_str()), instance))
            })
            .collect();
        Instances {
            shared,
            fallback: match tenants.unknown {
                Unknown::Default => Fallback::Shared,
                Unknown::Reject => Fallback::Reject,
            },
            by_customer,
        }
    }

    /// One instance of `c`, for `customer` (None: the connector's own).
    fn instance(&self, c: &ConnectorSettings, customer: Option<&str>) -> Arc<Instance> {
        let mut engine = c.engine.clone();
        if customer.is_some() {
            // Readiness is about the pod, not about any one customer's endpoint; a thousand
            // customers' health checks would also be a thousand requests at every start.
            engine.health_check.enabled = false;
        }
        let client = if c.client.builds_same_client_as(&self.client) {
            self.client.clone()
        } else {
            c.client.sharing_one_client()
        };
        let start = Starter {
            id: Arc::from(c.id.as_str()),
            customer: customer.map(Arc::from),
            index: self.index,
            kind: c.kind.clone(),
            client,
            engine,
            kit: self.kit.clone(),
            stats: self.connector.stats().clone(),
            refusals: self.refusals.clone(),
        };
        Arc::new(Instance {
            fingerprint: c.fingerprint,
            filter: c.filter.clone(),
            start: Arc::new(move || start.start()) as Start,
        })
    }
}

/// Everything one instance is started with.
struct Starter {
    id: Arc<str>,
    customer: Option<Arc<str>>,
    index: ConnectorIndex,
    kind: Arc<dyn switchyard_destination::ConnectorConfig>,
    client: ClientOptions,
    engine: switchyard_core::EngineSettings,
    kit: Kit,
    stats: Arc<ConnectorStats>,
    refusals: Refusals,
}

impl Starter {
    fn start(&self) -> ConnectorHandle {
        let wiring = Wiring {
            acker: self.kit.acker.clone(),
            timings: self.kit.timings.clone(),
            dead_letters: self.kit.dead_letters.clone(),
            isolation: (self.kit.role_of)(&self.id, self.customer.as_deref()),
            stats: Some(self.stats.clone()),
        };
        let (id, index, kind, client, engine) = (
            self.id.clone(),
            self.index,
            self.kind.clone(),
            self.client.clone(),
            self.engine.clone(),
        );
        if let Some(customer) = &self.customer {
            tracing::info!(connector = %id, customer = %customer, "starting the customer's instance");
        }
        let build = Box::pin(async move { kind.spawn(&id, index, &client, engine, wiring).await });
        let refusals = self.refusals.clone();
        ConnectorHandle::building(
            &self.id,
            self.index,
            self.stats.clone(),
            &self.kit.runtime,
            build,
            Arc::new(move |events, reason| refusals.refuse(events, reason)),
        )
    }
}

/// Every instance's isolation, by connector id and customer: the main flow's workers and the
/// drains' share them.
#[derive(Default)]
pub struct Isolations {
    by_instance: Mutex<HashMap<InstanceKey, Arc<Isolation>>>,
}

/// A connector id, and a customer code (None: the connector's own instance).
type InstanceKey = (String, Option<String>);

impl Isolations {
    /// The isolation of connector `c`'s instance for `customer`, made on first use.
    pub fn of(&self, c: &ConnectorSettings, customer: Option<&str>) -> Arc<Isolation> {
        let mut all = self
            .by_instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.entry((c.id.clone(), customer.map(str::to_owned)))
            .or_insert_with(|| {
                let name = match customer {
                    Some(customer) => format!("{} for {customer}", c.id),
                    None => c.id.clone(),
                };
                Arc::new(Isolation::new(&name, c.isolation))
            })
            .clone()
    }

    /// The state of connector `id`'s instance for `customer`, if it has an isolation yet.
    pub fn state(&self, id: &str, customer: Option<&str>) -> Option<switchyard_core::State> {
        let all = self
            .by_instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.get(&(id.to_owned(), customer.map(str::to_owned)))
            .map(|i| i.state())
    }

    /// Every instance's isolation of connector `id` made so far.
    pub fn of_connector(&self, id: &str) -> Vec<Arc<Isolation>> {
        let all = self
            .by_instance
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .filter(|((c, _), _)| c == id)
            .map(|(_, i)| i.clone())
            .collect()
    }
}
