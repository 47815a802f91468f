# switchyard: `make build` then `bin/switchyard serve`; `make test` runs every test.
.PHONY: build test run clean proto bench

build:
	scripts/build

run: build
	bin/switchyard serve

test:
	scripts/test

proto:
	scripts/gen-proto

bench:
	scripts/bench

clean:
	rm -rf bin
