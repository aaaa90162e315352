"""nbgrader configuration for a course built from these assignments: copy this file into the course root.

Two changes from nbgrader's defaults, both about the feedback students receive
(``nbgrader generate_feedback``):

* the hidden tests are removed from the feedback. nbgrader puts them back into every submission when
  it autogrades (that is how they run), and by default its feedback shows the autograded notebook
  as it is, hidden tests included;
* a failed test shows only its last line, e.g. ``Feedback: ✗ the CFA loss is zero ... Hint: ...``
  (the checks in the test cells write their messages for students), not a traceback whose context
  lines would quote the hidden test that failed.

See README.md in this folder for the whole workflow.
"""

from nbconvert.preprocessors import CSSHTMLHeaderPreprocessor, Preprocessor
from nbgrader.preprocessors import ClearHiddenTests, GetGrades

c = get_config()  # noqa: F821 -- provided by nbgrader when it loads this file


class ShortTracebacks(Preprocessor):
    """Keep only the ``ExceptionName: message`` line of every error output."""

    enabled = True

    def preprocess_cell(self, cell, resources, index):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                out["traceback"] = [f"{out.get('ename', 'Error')}: {out.get('evalue', '')}"]
        return cell, resources


c.GenerateFeedback.preprocessors = [GetGrades, ClearHiddenTests, ShortTracebacks, CSSHTMLHeaderPreprocessor]
