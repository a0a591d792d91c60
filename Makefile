# s3cachefs: build, check, test and demo.
#
#   make deps    install what the tests and the demo need, only if missing
#   make build   build bin/s3cachefs
#   make vet     gofmt and go vet
#   make test    deps + vet + every test, with the race detector
#   make demo    deps + build + a walk through the main job (test/demo.sh)

GO       ?= go
GOPATH   := $(shell $(GO) env GOPATH)
BIN      := bin/s3cachefs

# System packages: FUSE, the AWS CLI and numpy for the end-to-end tests and
# the demo, and a C toolchain because the race detector needs cgo.
APT_PACKAGES      := ca-certificates fuse3 awscli python3-numpy gcc libc6-dev
VERSITYGW_VERSION := v1.8.0
VERSITYGW         := $(firstword $(subst :, ,$(GOPATH)))/bin/versitygw

# apt needs root; use sudo when not root and sudo exists.
SUDO := $(shell [ "$$(id -u)" = 0 ] || command -v sudo)

.PHONY: all deps build vet test demo clean

all: build

deps:
	@missing=""; \
	for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y --no-install-recommends $$missing; \
	fi
	@if ! $(GO) version -m $(VERSITYGW) 2>/dev/null | grep -Eq "^\s+mod\s+github.com/versity/versitygw\s+$(VERSITYGW_VERSION)\s"; then \
		echo "installing versitygw $(VERSITYGW_VERSION)"; \
		GOBIN=$(dir $(VERSITYGW)) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION); \
	fi

build:
	$(GO) build -o $(BIN) ./cmd/s3cachefs

vet:
	@unformatted="$$(gofmt -l .)"; \
	if [ -n "$$unformatted" ]; then echo "gofmt -w needed on:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...

test: deps vet
	VERSITYGW=$(VERSITYGW) $(GO) test -race -count=1 -timeout 20m ./...

demo: deps build
	VERSITYGW=$(VERSITYGW) bash test/demo.sh

clean:
	rm -rf bin
