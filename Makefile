# nestbox: the two commands a new user needs, and a few more.
#   make demo   install what is missing, build, and run `nestbox run -- uname -a` in a microVM
#   make test   install what is missing, build, and run the whole test suite
#   make bench  boot overhead against a raw QEMU boot; sandbox cycles, leaks, exec latency

CARGO ?= cargo

.PHONY: demo test deps build bench fmt clippy

deps:
	./scripts/install-deps.sh

build: deps
	$(CARGO) build --release --locked -p nestbox-cli

demo: build
	./target/release/nestbox run -- uname -a

test: deps
	$(CARGO) nextest run --workspace --locked --profile ci
	$(CARGO) test --workspace --locked --doc

bench: deps
	$(CARGO) bench --locked -p nestbox-cli --bench boot
	$(CARGO) bench --locked -p nestbox-cli --bench sandbox
	$(CARGO) bench --locked -p nestbox-cli --bench image

fmt:
	$(CARGO) fmt --all

clippy:
	$(CARGO) clippy --workspace --all-targets --locked
