"""From a finished campaign to an answer: each trial's metrics and cost (collect), ranked by the
experiment's objective; the table (table), the HTML report with its Gantt timeline (report), and
MLflow tracking (tracking)."""
