"""Reading the operator's own metrics in the benchmarks."""

from prometheus_client.parser import text_string_to_metric_families


def resumed(text: str) -> int:
    """Resources the operator reconciled since it started: by a create or update handler
    (the "change" trigger of ``thingspace_reconciles_total``) or by the first drift sweep,
    which resumes every unchanged resource ("resume"), from its /metrics text."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "thingspace_reconciles"
            for sample in family.samples
            if sample.name == "thingspace_reconciles_total"
            and sample.labels.get("trigger") in ("change", "resume")
        )
    )
