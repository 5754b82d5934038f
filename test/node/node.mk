# ---------------------------------------------------------------------------
# The container image and a one-node cluster (test/node/, README.md there):
# the image built from the Dockerfile offline with podman (base images made
# from Debian packages, cached), and containerd + runc + kubelet +
# kube-scheduler against the stack's API server, where deploy/ runs as a real
# pod (test/node/overlay) and Prometheus scrapes it. Included by the Makefile.
# ---------------------------------------------------------------------------
LIFEBOAT_NODE_DIR ?= /tmp/lifeboat-node
LB_IMAGE ?= localhost/lifeboat:test
export LIFEBOAT_NODE_DIR LB_IMAGE
NODE_SCRIPTS := test/node

.PHONY: image node-install node-up node-down test-node test-rules

## image: build the Dockerfile offline with podman ($(LB_IMAGE)); run it as the Deployment does
image:
	$(NODE_SCRIPTS)/install.sh node
	VERSION=$(VERSION) $(NODE_SCRIPTS)/image.sh build

## node-install: host packages, kubelet, kube-scheduler, Prometheus and promtool (built once, cached)
node-install:
	$(NODE_SCRIPTS)/install.sh

## node-up: the stack and a one-node cluster on it (containerd, kubelet, kube-scheduler)
node-up: stack-up
	$(NODE_SCRIPTS)/node.sh up

## node-down: stop the node, unmount, remove its cgroups, restore the sysctls kubelet changed
node-down:
	$(NODE_SCRIPTS)/node.sh down

# The node runs on the stack's API server: it stops first.
stack-down stack-wipe: node-down

## test-node: the image as a real pod on the node (TestPod), and the alert rules' unit tests
test-node: image node-up test-rules
	$(NODE_SCRIPTS)/node.sh load $(LB_IMAGE)
	$(GO) vet -tags 'e2e node $(GO_TAGS)' ./test/e2e/
	LIFEBOAT_GO_TAGS='$(GO_TAGS)' $(GO) test -tags 'e2e node $(GO_TAGS)' -count=1 -run '^TestPod$$' -timeout 20m ./test/e2e/

## test-rules: promtool test rules for every alert of deploy/prometheusrule.yaml
test-rules:
	$(NODE_SCRIPTS)/rules.sh
