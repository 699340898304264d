const rows = Array.from(document.querySelectorAll('details.traj'));
function apply() {
  const want = {};
  document.querySelectorAll('select.filter').forEach(s => { if (s.value) want[s.name] = s.value; });
  let shown = 0;
  rows.forEach(r => {
    const ok = Object.entries(want).every(([k, v]) => r.dataset[k] === v);
    r.style.display = ok ? '' : 'none';
    shown += ok;
  });
  document.getElementById('count').textContent = shown + ' of ' + rows.length + ' trajectories';
}
document.querySelectorAll('select.filter').forEach(s => s.addEventListener('change', apply));
apply();
