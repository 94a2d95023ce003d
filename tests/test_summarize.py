"""The results table script."""

import json
import os

from absl.testing import absltest

from experiments import summarize


def _write(directory, **summary):
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, 'summary.json'), 'w') as f:
    json.dump(summary, f)


class SummarizeTest(absltest.TestCase):

  def test_table_and_plot(self):
    root = self.create_tempdir().full_path
    common = dict(dataset='d', arch='a', block_deletion_mean=0.5, forwards_per_step=1,
                  depth_curve=[[2, 0.5, 1], [3, 0.9, 1]])
    _write(f'{root}/b', method='baseline', full_accuracy=0.9, train_seconds=10.0,
           seconds_per_step=0.1, **common)
    _write(f'{root}/g', method='gkt', full_accuracy=0.95, train_seconds=25.0,
           seconds_per_step=0.25, **{'subnet_acc/level1': 0.8}, **common)
    runs = summarize.load([f'{root}/b', f'{root}/g'])
    lines = summarize.table(runs).splitlines()
    self.assertEqual(lines[2], '| baseline | 0.9000 |  | 0.5000 | 0.100 | 1.00x | 1 |')
    self.assertEqual(lines[3], '| gkt | 0.9500 | 0.8000 | 0.5000 | 0.250 | 2.50x | 1 |')
    summarize.plot(runs, f'{root}/p.png')
    self.assertTrue(os.path.exists(f'{root}/p.png'))

  def test_missing_run(self):
    with self.assertRaisesRegex(SystemExit, 'summary.json does not exist'):
      summarize.load([self.create_tempdir().full_path])


if __name__ == '__main__':
  absltest.main()
