"""launch/din_security.py: when it turns security.curve on, and the keys it makes.

  python3 tests/launch/launch_din_security_test.py BUILD_DIR
"""
import os
import stat
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "launch"))
import din_security  # noqa: E402

BUILD_DIR = None

DEMO = """
tables { name: "user" dim: 16 shards: 3 optimizer { sgd { learning_rate: 0.1 } } }
model { top_hidden: [200, 80] }
"""


class DetectTest(unittest.TestCase):
    def test_config_text(self):
        on = din_security.curve_enabled
        self.assertFalse(on(DEMO, []))
        self.assertTrue(on(DEMO + "security { curve: true }", []))
        self.assertTrue(on(DEMO + "security: {\n  # keys per job\n  curve : True\n}", []))
        self.assertTrue(on("security < curve: 1 >", []))
        self.assertFalse(on(DEMO + "security { curve: false }", []))
        self.assertFalse(on(DEMO + "# security { curve: true }\n", []))
        self.assertFalse(on('tables { name: "security" dim: 4 }', []))
        # `curve` elsewhere is not security.curve.
        self.assertFalse(on("model { curve: true }", []))
        self.assertFalse(on("security { other { curve: true } }", []))

    def test_sets_override_the_file(self):
        on = din_security.curve_enabled
        self.assertTrue(on(DEMO, ["trainer.epochs=2", "security.curve=true"]))
        self.assertFalse(on(DEMO + "security { curve: true }", ["security.curve=false"]))
        self.assertTrue(on(DEMO, ["security={curve: true}"]))
        self.assertTrue(on(DEMO, ["security=curve: t"]))
        self.assertFalse(on(DEMO, ["security.curve=true", "security.curve=0"]))

    def test_config_path(self):
        with tempfile.NamedTemporaryFile("w", suffix=".pbtxt") as f:
            f.write(DEMO + "security { curve: true }\n")
            f.flush()
            self.assertTrue(din_security.curve_enabled(f.name, []))


class PrepareTest(unittest.TestCase):
    def test_off_does_nothing(self):
        self.assertEqual(din_security.prepare(DEMO, [], "/nonexistent"), [])

    def test_given_key_dir_is_kept(self):
        sets = ["security.curve=true", "security.key_dir=/shared/keys"]
        self.assertEqual(din_security.prepare(DEMO, sets, "/nonexistent"), [])

    def test_missing_din_keys(self):
        with self.assertRaisesRegex(din_security.Error, "din_keys"):
            din_security.prepare(DEMO, ["security.curve=true"], "/nonexistent")

    def test_makes_private_keys(self):
        if BUILD_DIR is None:
            self.skipTest("needs BUILD_DIR (din_keys)")
        with tempfile.TemporaryDirectory() as job:
            extra = din_security.prepare(DEMO + "security { curve: true }", [], BUILD_DIR,
                                         os.path.join(job, "job"))
            self.assertEqual(len(extra), 1)
            path, _, key_dir = extra[0].partition("=")
            self.assertEqual(path, "security.key_dir")
            self.assertTrue(os.path.isabs(key_dir))
            self.assertTrue(key_dir.startswith(os.path.join(job, "job")))
            self.assertEqual(stat.S_IMODE(os.stat(key_dir).st_mode), 0o700)
            for name in ("server.key", "server.key_secret", "client.key", "client.key_secret"):
                p = os.path.join(key_dir, name)
                self.assertEqual(stat.S_IMODE(os.stat(p).st_mode), 0o600, name)
                with open(p) as f:
                    self.assertEqual(len(f.read().strip()), 40, name)
            # A second job gets other keys.
            again = din_security.prepare(DEMO, ["security.curve=true"], BUILD_DIR, job)
            self.assertNotEqual(again, extra)


if __name__ == "__main__":
    if len(sys.argv) > 1 and not sys.argv[1].startswith("-"):
        BUILD_DIR = sys.argv.pop(1)
    unittest.main()
