// Client-side navigation: every resource at its own URL, the browser's
// history and same-origin links kept working.
import { useEffect, useState } from 'preact/hooks';

export function navigate(path) {
  if (location.pathname + location.search !== path) history.pushState(null, '', path);
  window.dispatchEvent(new Event('neptune:navigate'));
}

// Same-origin links navigate in place; modified clicks keep the browser's ways.
document.addEventListener('click', (event) => {
  const a = event.target.closest?.('a[href^="/"]');
  if (!a || event.defaultPrevented || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || a.target) return;
  event.preventDefault();
  navigate(a.getAttribute('href'));
});

export function usePath() {
  const [path, setPath] = useState(location.pathname);
  useEffect(() => {
    const update = () => setPath(location.pathname);
    window.addEventListener('popstate', update);
    window.addEventListener('neptune:navigate', update);
    return () => {
      window.removeEventListener('popstate', update);
      window.removeEventListener('neptune:navigate', update);
    };
  }, []);
  return path;
}

// Polls `load` every `ms` while the page shows it.
export function usePoll(load, ms, deps) {
  const [value, setValue] = useState(null);
  const [error, setError] = useState(null);
  useEffect(() => {
    let live = true;
    let timer;
    const run = async () => {
      try {
        const v = await load();
        if (live) {
          setValue(v);
          setError(null);
        }
      } catch (e) {
        if (live) setError(e);
      }
      if (live && ms) timer = setTimeout(run, ms);
    };
    run();
    return () => {
      live = false;
      clearTimeout(timer);
    };
  }, deps);
  return [value, error, setValue];
}

export const when = (ms) => (ms ? new Date(ms).toLocaleString() : '');
