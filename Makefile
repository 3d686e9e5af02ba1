# One command per job. `make test` is what CI runs (.ci/run); `make demo` is the product's
# main job on a local control plane. Both install what they need on a fresh machine.
.PHONY: test demo bench tools venv lint clean

test:
	hack/check.sh

demo:
	hack/demo.sh $(ARGS)

bench:
	hack/bench.sh

tools:
	hack/tools.sh

venv:
	hack/venv.sh

lint:
	hack/check.sh --lint-only

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache hack/idp/node_modules
