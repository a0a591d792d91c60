# s3cachefs: build, check, test and demo.
#
#   make deps    install what the tests and the demo need, only if missing
#   make build   build bin/s3cachefs
#   make install build, then install it as $(DESTDIR)$(PREFIX)/bin/s3cachefs
#                (PREFIX=/usr/local: where mount -t fuse.s3cachefs finds it)
#   make vet     gofmt and go vet
#   make test    deps + vet + every test, with the race detector
#   make demo    deps + build + a walk through the main job (test/demo.sh)
#   make bench   deps + bench-deps + the benchmark against local disk, aws s3 sync
#                and rclone (test/bench; root, ~15 GB in /var/tmp, 10-20 min);
#                flags through BENCH_FLAGS, e.g. make bench BENCH_FLAGS="-quick -keep"

GO       ?= go
GOPATH   := $(shell $(GO) env GOPATH)
BIN      := bin/s3cachefs
# make install: mount(8) runs mount.fuse3 with no PATH, and the /bin/sh it
# runs the helper through searches its default path, which has
# /usr/local/bin (dash: /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin).
PREFIX   ?= /usr/local
BINDIR   ?= $(PREFIX)/bin
DESTDIR  ?=

# System packages: FUSE, the AWS CLI and numpy for the end-to-end tests and
# the demo, a C toolchain because the race detector needs cgo, and mkfs.ext4
# for the full-disk test's small loop-mounted filesystem, and Debian's gVisor
# (runsc, 2022-12) for the sandbox test.
APT_PACKAGES      := ca-certificates fuse3 awscli python3-numpy gcc libc6-dev e2fsprogs runsc
# What only the benchmark needs: rclone is one of the peers it measures.
BENCH_APT_PACKAGES := rclone python3-torch
BENCH_FLAGS       ?=
VERSITYGW_VERSION := v1.8.0
VERSITYGW         := $(firstword $(subst :, ,$(GOPATH)))/bin/versitygw
# A current gVisor, the kind Modal runs, for the sandbox test: built from its
# Go module, static (a cgo build cannot re-exec itself in its sandbox).
RUNSC_MODULE      := gvisor.dev/gvisor
RUNSC_VERSION     := v0.0.0-20260905035102-160fafc42237
RUNSC             := $(firstword $(subst :, ,$(GOPATH)))/bin/runsc

# apt needs root; use sudo when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

# apt-install-missing installs the Debian packages $(1) that are not yet
# installed; it does nothing when all are.
define apt-install-missing
	@missing=""; \
	for p in $(1); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi
endef

.PHONY: all deps bench-deps build install uninstall vet test demo bench clean

all: build

deps:
	$(call apt-install-missing,$(APT_PACKAGES))
	@if ! $(GO) version -m $(VERSITYGW) 2>/dev/null | grep -Eq "^\s+mod\s+github.com/versity/versitygw\s+$(VERSITYGW_VERSION)\s"; then \
		echo "installing versitygw $(VERSITYGW_VERSION)"; \
		GOBIN=$(dir $(VERSITYGW)) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); \
	fi
	@if ! $(GO) version -m $(RUNSC) 2>/dev/null | grep -Eq "^\s+mod\s+$(RUNSC_MODULE)\s+$(RUNSC_VERSION)\s"; then \
		echo "building gVisor's runsc $(RUNSC_VERSION) (a few minutes)"; \
		CGO_ENABLED=0 GOBIN=$(dir $(RUNSC)) $(GO) install $(RUNSC_MODULE)/runsc@$(RUNSC_VERSION); \
	fi

bench-deps:
	$(call apt-install-missing,$(BENCH_APT_PACKAGES))

build:
	$(GO) build -o $(BIN) ./cmd/s3cachefs

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/s3cachefs

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/s3cachefs

vet:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

test: deps vet
	VERSITYGW=$(VERSITYGW) RUNSC=$(RUNSC) $(GO) test -race -count=1 -timeout 20m ./...

demo: deps build
	VERSITYGW=$(VERSITYGW) bash test/demo.sh

bench: deps bench-deps
	VERSITYGW=$(VERSITYGW) RUNSC=$(RUNSC) $(GO) run ./test/bench $(BENCH_FLAGS)

clean:
	rm -rf bin
