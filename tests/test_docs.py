"""The documentation is checked against the repository: the README's Python blocks run, every
`experiments` path, module, relative link and method page it names exists, and the changelog's
newest version is the package's."""

import os
import pathlib
import re
import subprocess
import sys
import tomllib

from absl.testing import absltest

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / 'README.md'
PYTHON_BLOCK = re.compile(r'^```python\n(.*?)^```$', re.S | re.M)
# `experiments/configs/cifar.py:method=gkt` names experiments/configs/cifar.py.
EXPERIMENTS_PATH = re.compile(r'(?<![\w/.])experiments/[\w./-]*[\w/]')
MODULE = re.compile(r'python\s+-m\s+(experiments(?:\.\w+)+)')
LINK = re.compile(r'\]\(([^)\s]+)\)')
# A method page by path, as docs and docstrings name it (`docs/methods/gkt.md`).
METHOD_PAGE = re.compile(r'[\w./]*methods/\w+\.md')
DECIMAL = re.compile(r'\d+\.\d{3,}')  # a measured value, e.g. 0.8943


def history_marks(text: str) -> list[str]:
  """Commit hashes (7+ hex digits with a letter and a digit), issue numbers and dates."""
  hashes = [w for w in re.findall(r'\b[0-9a-f]{7,40}\b', text)
            if re.search(r'[a-f]', w) and re.search(r'\d', w)]
  issues = re.findall(r'issue #?\d+', text, re.I)
  dates = re.findall(r'\b20\d\d-\d\d-\d\d\b', text)
  return hashes + issues + dates


def markdown_files() -> list[pathlib.Path]:
  return [README, ROOT / 'CHANGELOG.md', *sorted((ROOT / 'docs').rglob('*.md'))]


def python_blocks(text: str) -> list[str]:
  return PYTHON_BLOCK.findall(text)


def experiments_paths(text: str) -> set[str]:
  return {m.group(0).rstrip('.') for m in EXPERIMENTS_PATH.finditer(text)}


def module_path(module: str) -> pathlib.Path:
  """experiments.probes.conv -> experiments/probes/conv.py (or the package's __init__.py)."""
  path = ROOT.joinpath(*module.split('.'))
  return path / '__init__.py' if path.is_dir() else path.with_suffix('.py')


def relative_links(text: str) -> list[str]:
  links = [link.split('#', 1)[0] for link in LINK.findall(text)]
  return [l for l in links if l and not re.match(r'[a-z]+:', l)]


def docstrings_of(path: pathlib.Path) -> str:
  """The module docstring and every comment of a Python file."""
  text = path.read_text()
  match = re.match(r'\s*[rR]?("""|\'\'\')(.*?)\1', text, re.S)
  comments = re.findall(r'#.*', text)
  return (match.group(2) if match else '') + '\n'.join(comments)


def method_page_exists(mention: str, where: pathlib.Path) -> bool:
  return (ROOT / mention).is_file() or (where.parent / mention).is_file()


class ReadmeCodeTest(absltest.TestCase):

  def test_the_readme_has_python_blocks(self):
    self.assertNotEmpty(python_blocks(README.read_text()))

  def test_every_python_block_runs(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    for i, block in enumerate(python_blocks(README.read_text())):
      with self.subTest(block=i):
        result = subprocess.run([sys.executable, '-c', block], cwd=ROOT, env=env,
                                capture_output=True, text=True, timeout=300, check=False)
        self.assertEqual(result.returncode, 0, f'block {i} failed:\n{result.stderr[-3000:]}')

  def test_a_failing_block_is_reported(self):
    self.assertEqual(python_blocks('```python\nraise SystemExit(3)\n```\n'),
                     ['raise SystemExit(3)\n'])


class ReadmeFormTest(absltest.TestCase):
  """The README is for a newcomer: short, and with no project history in it."""

  def test_at_most_220_lines(self):
    self.assertLessEqual(len(README.read_text().splitlines()), 220)

  def test_no_commit_hash_issue_number_or_date(self):
    self.assertEqual(history_marks(README.read_text()), [])

  def test_history_marks_are_found(self):
    self.assertEqual(history_marks('at 8f6eff2 (issue #7), on 2026-12-03; 0.9861 and 1,438'),
                     ['8f6eff2', 'issue #7', '2026-12-03'])


class NamedPathsTest(absltest.TestCase):

  def test_every_experiments_path_and_module_exists(self):
    for doc in markdown_files():
      text = doc.read_text()
      paths = experiments_paths(text)
      modules = set(MODULE.findall(text))
      if doc.name in ('README.md', 'results.md'):
        self.assertNotEmpty(paths | modules, doc)
      for path in sorted(paths):
        with self.subTest(doc=doc.name, path=path):
          self.assertTrue((ROOT / path).exists(), f'{doc.name} names {path}: not found')
      for module in sorted(modules):
        with self.subTest(doc=doc.name, module=module):
          self.assertTrue(module_path(module).is_file(),
                          f'{doc.name} names python -m {module}: not found')

  def test_the_patterns_see_config_arguments_and_wrapped_commands(self):
    text = ('`experiments/configs/cifar.py:method=gkt` and `python -m\n'
            'experiments.probes.nothing` and experiments/missing.py.')
    self.assertEqual(experiments_paths(text),
                     {'experiments/configs/cifar.py', 'experiments/missing.py'})
    self.assertEqual(MODULE.findall(text), ['experiments.probes.nothing'])
    self.assertFalse(module_path('experiments.probes.nothing').is_file())


class LinksTest(absltest.TestCase):

  def test_every_relative_link_resolves(self):
    for doc in markdown_files():
      for link in relative_links(doc.read_text()):
        with self.subTest(doc=str(doc.relative_to(ROOT)), link=link):
          self.assertTrue((doc.parent / link).exists(),
                          f'{doc.relative_to(ROOT)} links {link}: not found')

  def test_links_are_found(self):
    self.assertEqual(relative_links('[a](docs/a.md#x) [b](https://x.org) [c](#top) '
                                    '![p](results/p.png)'), ['docs/a.md', 'results/p.png'])

  def test_every_method_page_named_exists(self):
    sources = [(doc, doc.read_text()) for doc in markdown_files()]
    sources += [(path, docstrings_of(path))
                for path in sorted((ROOT / 'experiments' / 'configs').glob('*.py'))]
    sources += [(path, path.read_text()) for path in sorted((ROOT / 'gkt_jax').rglob('*.py'))]
    named = 0
    for where, text in sources:
      for mention in METHOD_PAGE.findall(text):
        named += 1
        with self.subTest(where=str(where.relative_to(ROOT)), page=mention):
          self.assertTrue(method_page_exists(mention, where),
                          f'{where.relative_to(ROOT)} names {mention}: not found')
    self.assertGreater(named, 5)

  def test_a_page_outside_the_repository_is_not_found(self):
    self.assertEqual(METHOD_PAGE.findall('see shared/methods/gkt.md.'),
                     ['shared/methods/gkt.md'])
    self.assertFalse(method_page_exists('shared/methods/gkt.md', README))
    self.assertTrue(method_page_exists('docs/methods/gkt.md', README))


class ResultsTest(absltest.TestCase):

  def test_every_number_of_the_readme_results_table_is_in_docs_results(self):
    section = README.read_text().split('## Results', 1)[1].split('\n## ', 1)[0]
    rows = [line for line in section.splitlines() if line.startswith('|')]
    numbers = {n for row in rows for n in DECIMAL.findall(row)}
    self.assertGreater(len(numbers), 20)
    results = (ROOT / 'docs' / 'results.md').read_text()
    for number in sorted(numbers):
      with self.subTest(number=number):
        self.assertIn(number, results, f'README results table: {number} not in docs/results.md')


class HelpTest(absltest.TestCase):

  def test_main_help_lists_the_flags_a_newcomer_needs(self):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    result = subprocess.run([sys.executable, '-m', 'experiments.main', '--help'], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300, check=False)
    self.assertIn('flags:', result.stdout, result.stderr[-3000:])  # absl exits 1 after help
    for flag in ('--config', '--workdir', '--print_config', '--jax_distributed',
                 '--coordinator_address', '--num_processes', '--process_id'):
      with self.subTest(flag=flag):
        self.assertIn(flag, result.stdout)
    self.assertIn(':method=', result.stdout)  # the usage line shows a config argument


class VersionTest(absltest.TestCase):

  def test_changelog_newest_version_is_the_package_version(self):
    changelog = (ROOT / 'CHANGELOG.md').read_text()
    versions = re.findall(r'^## \[(\d+\.\d+\.\d+)\]', changelog, re.M)
    self.assertNotEmpty(versions, 'CHANGELOG.md has no "## [x.y.z]" entry')
    with open(ROOT / 'pyproject.toml', 'rb') as f:
      project_version = tomllib.load(f)['project']['version']
    init = (ROOT / 'gkt_jax' / '__init__.py').read_text()
    package_version = re.search(r"__version__ = '([^']+)'", init).group(1)
    self.assertEqual(versions[0], project_version)
    self.assertEqual(package_version, project_version)


if __name__ == '__main__':
  absltest.main()
