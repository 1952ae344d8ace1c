"""Data validation with a Great Expectations 1.x suite built from the config's `validation` section.

The suite runs in an ephemeral GX context on a pandas frame made from the `TextTable`; each GX
result becomes an `ExpectationOutcome` whose `observed` value is the number GX measured
(`observed_value`, or `unexpected_percent` for per-row checks), so reports and the registry can
quote it. One expectation is Steward's own (GX has no per-value minimum count): every training label
needs `min_examples_per_label` rows, checked on GX's `column.value_counts` metric.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from core.config import ValidationConfig
    from tasks.data import TextTable


@dataclass(frozen=True)
class ExpectationOutcome:
    """One expectation's verdict. `observed` is GX's measured value; `details` its full result."""

    expectation: str
    column: str | None
    success: bool
    observed: object
    details: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def summary(self) -> str:
        """`text length between 1 and 10000 — 3 rows outside (0.4%)`."""
        return f"{self.description} — {_describe_observed(self)}"


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    role: str
    fingerprint: str
    rows: int
    outcomes: list[ExpectationOutcome]

    def failed(self) -> list[ExpectationOutcome]:
        return [outcome for outcome in self.outcomes if not outcome.success]

    def summary_lines(self) -> list[str]:
        """One readable line per failed expectation, prefixed with the dataset role."""
        return [f"{self.role}: {outcome.summary()}" for outcome in self.failed()]


@dataclass(frozen=True)
class _Check:
    """An expectation to build plus the words that describe it to a person."""

    expectation: Any
    description: str


def validate_table(
    table: TextTable,
    config: ValidationConfig,
    allowed_labels: list[str] | None,
    text_column: str,
    label_column: str | None,
) -> ValidationReport:
    """Run the suite on one dataset. Allowed labels: `config.allowed_labels`, else `allowed_labels`
    (the caller passes the training labels); with neither, the label-set check is skipped."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    frame = _frame(table, text_column, label_column)
    labels = config.allowed_labels if config.allowed_labels is not None else allowed_labels
    checks = [_column_exists(column) for column in (text_column, label_column) if column]
    checks += _checks(config, text_column, label_column if table.labels is not None else None, labels)
    if table.role == "train" and table.labels is not None and label_column:
        checks.append(_examples_per_label(label_column, config.min_examples_per_label))
    outcomes = [_outcome(result, checks) for result in _run_suite(frame, table.role, checks)]
    return ValidationReport(
        success=all(outcome.success for outcome in outcomes),
        role=table.role,
        fingerprint=table.fingerprint,
        rows=table.rows,
        outcomes=outcomes,
    )


TOKENS_COLUMN = "tokens"  # the documents' token counts under the base's tokenizer
# U+FFFD (what a lossy decoder leaves for undecodable bytes) and C0 control characters other than tab and
# line ends: text that went through a wrong encoding or is binary.
BROKEN_ENCODING = r"[\ufffd\x00-\x08\x0b\x0c\x0e-\x1f]"


def validate_documents(table: TextTable, config: ValidationConfig, token_counts: list[int],
                       text_column: str) -> ValidationReport:
    """A language model's corpus, checked like labelled data: enough documents, no empty or repeated ones,
    lengths in bounds, no broken encoding, and at least `min_tokens` tokens in all."""
    import pandas as pd

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    frame = _frame(table, text_column, None).assign(**{TOKENS_COLUMN: pd.Series(token_counts, dtype="int64")})
    checks = [*_checks(config, text_column, None, None), _encoding(text_column), _token_total(config.min_tokens)]
    outcomes = [_outcome(result, checks) for result in _run_suite(frame, table.role, checks)]
    return ValidationReport(all(o.success for o in outcomes), table.role, table.fingerprint, table.rows, outcomes)


def _encoding(text_column: str) -> _Check:
    import great_expectations.expectations as gxe

    return _Check(gxe.ExpectColumnValuesToNotMatchRegex(column=text_column, regex=BROKEN_ENCODING),
                  f"{text_column} without broken encoding (U+FFFD or control characters)")


def _token_total(minimum: int) -> _Check:
    import great_expectations.expectations as gxe

    return _Check(gxe.ExpectColumnSumToBeBetween(column=TOKENS_COLUMN, min_value=minimum),
                  f"at least {minimum:,} tokens in all")


def _frame(table: TextTable, text_column: str, label_column: str | None) -> pd.DataFrame:
    import pandas as pd

    columns = {text_column: pd.Series(table.texts, dtype=object)}
    if label_column is not None and table.labels is not None:
        columns[label_column] = pd.Series(table.labels, dtype=object)
    return pd.DataFrame(columns)


def _checks(
    config: ValidationConfig, text_column: str, label_column: str | None, allowed: list[str] | None
) -> list[_Check]:
    import great_expectations.expectations as gxe

    lengths = config.text_length
    not_null = 1.0 - config.max_null_fraction
    checks = [
        _Check(
            gxe.ExpectTableRowCountToBeBetween(min_value=config.min_rows), f"at least {config.min_rows} rows"
        ),
        _Check(
            gxe.ExpectColumnValuesToNotBeNull(column=text_column, mostly=not_null),
            f"{text_column} nulls at most {config.max_null_fraction:.1%}",
        ),
        _Check(
            gxe.ExpectColumnValueLengthsToBeBetween(
                column=text_column, min_value=lengths.min, max_value=lengths.max
            ),
            f"{text_column} length between {lengths.min} and {lengths.max}",
        ),
        _Check(  # unique proportion = distinct / non-null, so 1 - it is the share of repeated texts
            gxe.ExpectColumnProportionOfUniqueValuesToBeBetween(
                column=text_column, min_value=1.0 - config.max_duplicate_fraction
            ),
            f"{text_column} duplicates at most {config.max_duplicate_fraction:.1%}",
        ),
    ]
    if label_column is not None:
        checks.append(
            _Check(
                gxe.ExpectColumnValuesToNotBeNull(column=label_column, mostly=not_null),
                f"{label_column} nulls at most {config.max_null_fraction:.1%}",
            )
        )
        if allowed is not None:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeInSet(column=label_column, value_set=sorted(allowed)),
                    f"{label_column} in {{{', '.join(sorted(allowed))}}}",
                )
            )
    return checks


def _examples_per_label(label_column: str, minimum: int) -> _Check:
    expectation = _label_count_expectation()(column=label_column, min_value=minimum)
    return _Check(expectation, f"{label_column} at least {minimum} training rows per label")


@cache
def _label_count_expectation() -> type:
    """`expect_column_value_counts_to_be_at_least`: every distinct non-null value occurs at least
    `min_value` times. Defined on first use (GX registers expectation classes when they are defined, and
    importing GX is slow); observed value: the count of each value."""
    from typing import ClassVar

    from great_expectations.expectations.expectation import ColumnAggregateExpectation

    class ExpectColumnValueCountsToBeAtLeast(ColumnAggregateExpectation):
        min_value: int
        metric_dependencies: ClassVar[tuple[str, ...]] = ("column.value_counts",)
        success_keys: ClassVar[tuple[str, ...]] = ("min_value",)

        def _validate(self, metrics: dict, runtime_configuration: dict | None = None,
                      execution_engine: Any = None) -> dict:
            counts = {str(value): int(count) for value, count in metrics["column.value_counts"].items()}
            below = {value: count for value, count in counts.items() if count < self.min_value}
            return {"success": not below, "result": {"observed_value": counts, "below_minimum": below,
                                                     "min_value": self.min_value}}

    return ExpectColumnValueCountsToBeAtLeast


def _column_exists(column: str) -> _Check:
    import great_expectations.expectations as gxe

    return _Check(gxe.ExpectColumnToExist(column=column), f"column '{column}' present")


def _run_suite(frame: pd.DataFrame, role: str, checks: list[_Check]) -> list[Any]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch_definition = (
        context.data_sources.add_pandas("steward")
        .add_dataframe_asset(role)
        .add_batch_definition_whole_dataframe("whole table")
    )
    suite = gx.ExpectationSuite(name=f"steward-{role}")
    for index, check in enumerate(checks):
        check.expectation.meta = {"steward_check": index}
        suite.add_expectation(check.expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    results = list(batch.validate(suite).results)
    return sorted(results, key=lambda result: result.expectation_config.meta["steward_check"])


def _outcome(result: Any, checks: list[_Check]) -> ExpectationOutcome:
    configuration = result.expectation_config
    details = _json_safe(dict(result.result))
    observed = details.get("observed_value", details.get("unexpected_percent"))
    return ExpectationOutcome(
        expectation=configuration.type,
        column=configuration.kwargs.get("column"),
        success=bool(result.success),
        observed=observed,
        details=details,
        description=checks[configuration.meta["steward_check"]].description,
    )


def _json_safe(value: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(value, default=str))


def _describe_observed(outcome: ExpectationOutcome) -> str:
    details = outcome.details
    kind = outcome.expectation
    if kind == "expect_column_to_exist":
        return "present" if outcome.success else "missing"
    if kind == "expect_table_row_count_to_be_between":
        return f"{outcome.observed} rows"
    if kind == "expect_column_proportion_of_unique_values_to_be_between":
        unique = float(outcome.observed or 0.0)
        return f"duplicate fraction {1.0 - unique:.1%} (unique proportion {unique:.3f})"
    count = details.get("unexpected_count", 0)
    percent = details.get("unexpected_percent") or 0.0
    noun = "row" if count == 1 else "rows"
    if kind == "expect_column_values_to_not_be_null":
        return f"{count} null {noun} ({percent:.1f}%)"
    if kind == "expect_column_values_to_be_in_set":
        seen = sorted({str(v) for v in details.get("partial_unexpected_list", [])})
        return f"{count} {noun} with other labels ({percent:.1f}%): {', '.join(seen)}"
    if kind == "expect_column_value_lengths_to_be_between":
        return f"{count} {noun} outside ({percent:.1f}%){_first_row(details)}"
    if kind == "expect_column_values_to_not_match_regex":
        return f"{count} {noun} ({percent:.1f}%){_first_row(details)}"
    if kind == "expect_column_sum_to_be_between":
        return f"{int(float(str(outcome.observed))):,} tokens"
    if kind == "expect_column_value_counts_to_be_at_least":
        return _describe_label_counts(details)
    return f"observed {outcome.observed}"


def _first_row(details: dict[str, Any]) -> str:
    """`, first at row 12` (rows numbered from 1, as files and error messages number them)."""
    rows = details.get("partial_unexpected_index_list") or []
    return f", first at row {int(rows[0]) + 1}" if rows else ""


def _describe_label_counts(details: dict[str, Any]) -> str:
    """`label 'refund' has 1 training row (min_examples_per_label 5)`, rarest labels first."""
    below = sorted((details.get("below_minimum") or {}).items(), key=lambda item: (item[1], item[0]))
    minimum = details.get("min_value")
    if not below:
        return f"every label has at least {minimum} training rows"
    return "; ".join(
        f"label '{label}' has {count} training {'row' if count == 1 else 'rows'} (min_examples_per_label {minimum})"
        for label, count in below
    )
