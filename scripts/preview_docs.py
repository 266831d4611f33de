"""Docs without Quarto: render nbdev's processed notebooks to HTML, and check pages in headless Chromium.

    python scripts/preview_docs.py render _proc _docs_preview   # after nbdev-proc-nbs
    python scripts/preview_docs.py check _docs_preview          # or _docs, after nbdev-docs with Quarto

`check` opens every page in Chromium and fails, naming the page, unless it has its title and description, an entry
for each name its module exports, every figure its notebook shows, and no error output.
"""
import argparse
import ast
import html
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync']


def page_name(notebook: Path) -> str:
    "The page a notebook becomes, as nbdev names it: the numeric prefix dropped."
    from nbdev.config import nbpath2html
    return nbpath2html(notebook).name


def expected_pages(nbs: Path = ROOT/'nbs') -> dict:
    "For each page: its title, the names its module exports and how many figures its notebook shows."
    pages = {}
    for notebook in sorted(nbs.glob('[!_]*.ipynb')):
        nb = nbformat.read(notebook, as_version=4)
        title = re.search(r'^# (.+)$', nb.cells[0].source, re.M).group(1).strip()
        description = re.search(r'^> (.+)$', nb.cells[0].source, re.M).group(1).strip()
        module = next((m.group(1) for c in nb.cells if (m := re.search(r'^#\| default_exp (\S+)', c.source, re.M))), None)
        names, constants = [], []
        if module:
            tree = ast.parse((ROOT/'fashion_nb'/f'{module}.py').read_text())
            exported = next(ast.literal_eval(n.value) for n in tree.body
                            if isinstance(n, ast.Assign) and getattr(n.targets[0], 'id', '') == '__all__')
            defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
            names = [n for n in exported if n in defined]  # functions and classes get a show_doc entry
            constants = [n for n in exported if n not in defined]  # constants are documented by their cell
        figures = sum('image/png' in o.get('data', {}) for c in nb.cells if c.cell_type == 'code'
                      and not re.search(r'^#\| *hide', c.source, re.M) for o in c.outputs)
        pages[page_name(notebook)] = {'notebook': notebook.name, 'title': title, 'description': description,
                                      'names': names, 'constants': constants,
                                      'figures': figures}
    return pages


def render(proc: Path, out: Path) -> list[Path]:
    "HTML pages from nbdev-proc-nbs' output: front matter as title and description, Quarto's `echo: false` honoured."
    import yaml
    from nbconvert import HTMLExporter
    from nbconvert.preprocessors import TagRemovePreprocessor
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for notebook in sorted(proc.glob('[!_]*.ipynb')):
        nb = nbformat.read(notebook, as_version=4)
        front = {}
        if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.startswith('---'):
            front = yaml.safe_load(nb.cells.pop(0).source.strip('-\n')) or {}
        for cell in nb.cells:
            for key in set(cell) - {'cell_type', 'execution_count', 'id', 'metadata', 'outputs', 'source', 'attachments'}:
                del cell[key]  # nbdev's own bookkeeping (has_sd, ...), which nbformat's schema refuses
            cell.metadata.pop('execution', None)  # nbdev's timings, also outside the schema
            for output in cell.get('outputs', []):  # Quarto's link attributes mean nothing to plain markdown
                if 'text/markdown' in output.get('data', {}):
                    output.data['text/markdown'] = re.sub(r'\{target="_blank"[^}]*\}', '', output.data['text/markdown'])
            if cell.cell_type == 'code' and re.search(r'^#\| *echo: *false', cell.source, re.M):
                cell.metadata.setdefault('tags', []).append('hide-input')
        exporter = HTMLExporter(template_name='lab', embed_images=True)
        exporter.register_preprocessor(TagRemovePreprocessor(remove_input_tags={'hide-input'}), enabled=True)
        body, _ = exporter.from_notebook_node(nb)
        head = (f"<h1 class='title'>{html.escape(str(front.get('title', '')))}</h1>"
                f"<p class='description'>{html.escape(str(front.get('description', '')))}</p>")
        body = re.sub(r'(<body[^>]*>)', lambda m: m.group(1) + head, body, count=1)
        page = out/page_name(notebook)
        page.write_text(body)
        written.append(page)
    return written


def chromium() -> str | None:
    return shutil.which('chromium') or shutil.which('chromium-browser') or shutil.which('google-chrome')


def dump_dom(page: Path) -> str:
    "The page's DOM after Chromium has loaded it."
    with tempfile.TemporaryDirectory() as profile:
        result = subprocess.run([chromium(), *CHROMIUM_FLAGS, f'--user-data-dir={profile}', '--virtual-time-budget=3000',
                                 '--dump-dom', page.resolve().as_uri()], capture_output=True, text=True, timeout=120)
    if result.returncode != 0: raise RuntimeError(f"chromium failed on {page}: {result.stderr.strip()[-300:]}")
    return result.stdout


def problems(dom: str, expected: dict) -> list[str]:
    "What is wrong with one rendered page."
    found = []
    text = re.sub(r'<[^>]+>', ' ', dom)
    if expected['title'] not in html.unescape(text): found.append(f"no title {expected['title']!r}")
    if expected['description'] not in ' '.join(html.unescape(text).split()): found.append('no description')
    headings = {html.unescape(re.sub(r'<[^>]+>', '', h)).strip(' ¶\n') for h in re.findall(r'<h3[^>]*>(.*?)</h3>', dom, re.S)}
    inline_code = {html.unescape(re.sub(r'<[^>]+>', '', c)).strip() for c in re.findall(r'<code[^>]*>(.*?)</code>', dom, re.S)}
    missing = [n for n in expected['names'] if n not in headings]
    missing += [n for n in expected['constants'] if n not in inline_code]  # a constant is explained in the prose
    if missing: found.append(f"no API entry for {', '.join(missing)}")
    images = len(re.findall(r'<img\b', dom))
    if images < expected['figures']: found.append(f"{images} images shown, the notebook has {expected['figures']} figures")
    if 'Traceback (most recent call last)' in dom or 'jp-OutputArea-output jp-RenderedText" data-mime-type="application/vnd.jupyter.error' in dom:
        found.append('an error output')
    return found


def check(site: Path) -> int:
    expected = expected_pages()
    failures = 0
    for page, want in expected.items():
        path = site/page
        found = ['page missing'] if not path.exists() else problems(dump_dom(path), want)
        print(f"{page:<22} {'ok' if not found else '; '.join(found)}")
        failures += bool(found)
    return 1 if failures else 0


if __name__ == '__main__':
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    r = sub.add_parser('render'); r.add_argument('proc', type=Path); r.add_argument('out', type=Path)
    c = sub.add_parser('check'); c.add_argument('site', type=Path)
    args = parser.parse_args()
    if args.command == 'render':
        pages = render(args.proc, args.out)
        print(f"{len(pages)} pages in {args.out}/ (open {args.out/'index.html'} in a browser)")
    else:
        if not chromium(): sys.exit("preview_docs: no Chromium on the PATH (Debian: apt-get install chromium)")
        sys.exit(check(args.site))
