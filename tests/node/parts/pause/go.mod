module thingspace-operator/tests/node/parts/pause

go 1.26
