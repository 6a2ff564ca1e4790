"""The churn model beats recency on the fixture's 180-day split; CLI report."""

from __future__ import annotations

from typer.testing import CliRunner

from cli.main import app
from crm_store.analytics.config import AnalyticsConfig
from crm_store.analytics.evaluate import run_evaluation
from crm_store.seeding import DEFAULT_AS_OF


def test_churn_model_beats_the_recency_baseline_on_the_time_split(factory):
    with factory() as session:
        evaluation, model = run_evaluation(
            session, as_of=DEFAULT_AS_OF, config=AnalyticsConfig()
        )
    assert evaluation.cutoff.date().isoformat() == "2026-05-05"
    assert all(c <= evaluation.cutoff for c in model.cutoffs)
    assert evaluation.auc >= 0.80
    assert evaluation.auc > evaluation.baseline_auc
    assert 0 < evaluation.precision <= 1 and 0 < evaluation.recall <= 1
    # CLV: the probabilistic model predicts next-period spend better than
    # "same as the last period"
    clv = evaluation.clv
    assert clv["model_mae"] < clv["heuristic_mae"]
    assert abs(clv["model_total_error"]) < 0.15


def test_cli_evaluate_writes_markdown_and_charts(engine, tmp_path):
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner(mix_stderr=False).invoke(
        app,
        [
            "analytics",
            "evaluate",
            "--as-of",
            DEFAULT_AS_OF.isoformat(),
            "--output",
            str(tmp_path),
            "--database-url",
            url,
        ],
    )
    assert result.exit_code == 0, result.stdout + result.stderr
    assert "churn AUC: 0.8" in result.stdout
    report = (tmp_path / "evaluation.md").read_text()
    assert "recency-only baseline" in report and "## Time split" in report
    for name in ("churn_roc", "churn_calibration", "clv_deciles", "rfm_segments"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_cli_refresh_rejects_a_bad_date(engine):
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner(mix_stderr=False).invoke(
        app, ["analytics", "refresh", "--as-of", "yesterday", "--database-url", url]
    )
    assert result.exit_code == 2
    assert "not a date-time" in result.stderr


def test_cli_refresh_rejects_a_negative_discount_rate(engine, tmp_path):
    bad = tmp_path / "analytics.yml"
    bad.write_text("annual_discount_rate: -0.05\n")
    url = engine.url.render_as_string(hide_password=False)
    result = CliRunner(mix_stderr=False).invoke(
        app,
        ["analytics", "refresh", "--config", str(bad), "--database-url", url],
    )
    assert result.exit_code == 2
    assert "annual_discount_rate must be in [0, 1)" in result.stderr
