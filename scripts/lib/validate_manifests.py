"""Validates Kubernetes manifests: built-in kinds with kubernetes-validate (strict), KEDA's kinds
against the openAPIV3Schema of KEDA's own CRDs (vendored in scripts/schemas/), made strict the same
way (an object that lists its properties accepts no others, as kubernetes-validate --strict).

    python3 validate_manifests.py SCHEMA_DIR FILE...     (a FILE may hold several documents)

Exits 1 on the first kind it has no schema for, or on any validation error."""
import glob
import os
import subprocess
import sys
import tempfile

import jsonschema
import yaml


def strict(schema):
    """Closes every object schema that lists properties, as the API server's strict field validation does."""
    if isinstance(schema, dict):
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def crd_schemas(directory):
    schemas = {}
    for path in glob.glob(os.path.join(directory, "*.yaml")):
        with open(path) as f:
            crd = yaml.safe_load(f)
        if crd.get("kind") != "CustomResourceDefinition":
            continue
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schema = strict(version["schema"]["openAPIV3Schema"])
            # metadata is the API server's ObjectMeta, which kubernetes-validate checks for built-in kinds.
            schema["properties"]["metadata"] = {"type": "object"}
            schemas[(f"{group}/{version['name']}", kind)] = schema
    return schemas


def main():
    schema_dir, files = sys.argv[1], sys.argv[2:]
    crds = crd_schemas(schema_dir)
    failures, builtin = 0, []
    for path in files:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d]
        for doc in documents:
            key = (doc.get("apiVersion"), doc.get("kind"))
            name = f"{path}: {key[1]}/{doc.get('metadata', {}).get('name')}"
            if key in crds:
                errors = sorted(jsonschema.Draft7Validator(crds[key]).iter_errors(doc), key=lambda e: list(e.path))
                for error in errors:
                    print(f"FAIL {name}: {'.'.join(map(str, error.path))}: {error.message}")
                failures += len(errors)
                if not errors:
                    print(f"ok   {name} against KEDA's CRD schema")
            elif "." in (key[0] or "").split("/")[0] and not key[0].split("/")[0].endswith("k8s.io"):
                print(f"FAIL {name}: no schema for {key[0]} {key[1]} (vendor its CRD into {schema_dir})")
                failures += 1
            else:
                builtin.append(doc)
    if builtin:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump_all(builtin, f)
        result = subprocess.run(["kubernetes-validate", "--strict", f.name], capture_output=True, text=True)
        os.unlink(f.name)
        output = result.stdout + result.stderr
        print(output.replace(f.name, "manifests"), end="")
        if result.returncode != 0 or "Couldn't find schema" in output:
            failures += 1
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
