# Jaeger v2 and the project's collector distribution (otelcol-zaqar), built
# from the Go module proxy into .cache/bin/ once; included by the Makefile.
#
#   make backends    both (what the Jaeger / collector tests need)
#   make jaeger      .cache/bin/jaeger         Jaeger v2 (module v1.75.0 = Jaeger 2.12.0)
#   make collector   .cache/bin/otelcol-zaqar  from collector/builder-config.yaml
#
# Go's own caches (GOMODCACHE, GOCACHE: by default under $HOME) hold the
# downloaded modules and compiled packages, so a fresh clone on a machine
# that built them once only links; on a new machine the first build fetches
# and compiles everything (collector/README.md has the times). A rebuild
# happens when the pinned versions (the files named below) change.
GO ?= go
BACKENDS_BIN := .cache/bin
# The builder (ocb) at the release of the collector modules in the manifest.
OCB_VERSION := v0.161.0
# The versions Go resolves are those of go.mod / go.sum; no toolchain switch.
GO_ENV := GOTOOLCHAIN=local GOFLAGS=-mod=readonly

.PHONY: backends jaeger collector
backends: jaeger collector
jaeger: $(BACKENDS_BIN)/jaeger
collector: $(BACKENDS_BIN)/otelcol-zaqar

# `go install github.com/jaegertracing/jaeger/cmd/jaeger@v1.75.0` is refused
# (Jaeger's go.mod has a replace directive): collector/jaeger/go.mod has it
# as a tool, pinned with its go.sum.
$(BACKENDS_BIN)/jaeger: collector/jaeger/go.mod collector/jaeger/go.sum
	@mkdir -p $(BACKENDS_BIN)
	cd collector/jaeger && $(GO_ENV) $(GO) build -trimpath -o $(CURDIR)/$@.tmp github.com/jaegertracing/jaeger/cmd/jaeger
	@mv $@.tmp $@

$(BACKENDS_BIN)/ocb-$(OCB_VERSION):
	@mkdir -p $(BACKENDS_BIN)
	GOBIN=$(CURDIR)/$(BACKENDS_BIN) GOTOOLCHAIN=local $(GO) install go.opentelemetry.io/collector/cmd/builder@$(OCB_VERSION)
	@mv $(BACKENDS_BIN)/builder $@

# The builder writes the sources it generates (main.go, components.go, go.mod)
# to .cache/otelcol-zaqar/, resolves the modules and builds there.
$(BACKENDS_BIN)/otelcol-zaqar: collector/builder-config.yaml $(BACKENDS_BIN)/ocb-$(OCB_VERSION)
	GOTOOLCHAIN=local $(BACKENDS_BIN)/ocb-$(OCB_VERSION) --config collector/builder-config.yaml
	cp .cache/otelcol-zaqar/otelcol-zaqar $@.tmp
	@mv $@.tmp $@
