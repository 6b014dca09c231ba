# Turns a .cu file into C++ the emulator compiles: launches, shared memory declarations.
import re, sys
src, dst = sys.argv[1], sys.argv[2]
s = open(src).read()
n_launch = 0
def launch(m):
    global n_launch
    n_launch += 1
    name, cfg = m.group(1), m.group(2)
    return f'::emu::Launcher({cfg}, __FILE__, __LINE__)({name}, '
s = re.sub(r'([A-Za-z_][\w:]*(?:<[^<>;()]*>)?)\s*<<<(.*?)>>>\s*\(', launch, s, flags=re.S)
# a 3-arg config would shift __FILE__ into the stream slot: require all four
for m in re.finditer(r'::emu::Launcher\((.*?), __FILE__', s, flags=re.S):
    depth = 0; parts = 1
    for ch in m.group(1):
        if ch in '([{': depth += 1
        elif ch in ')]}': depth -= 1
        elif ch == ',' and depth == 0: parts += 1
    assert parts == 4, m.group(0)
# __launch_bounds__(N[, ...]) T name(params) {  ->  T name(params) { CheckLaunchBounds(N);
n_lb = 0
def bounds(m):
    global n_lb
    n_lb += 1
    depth = 0
    for i, ch in enumerate(m.group(1)):  # the first argument, at depth 0
        if ch in '([{<': depth += 1
        elif ch in ')]}>': depth -= 1
        elif ch == ',' and depth == 0: break
    else:
        i = len(m.group(1))
    first = m.group(1)[:i]
    return f'{m.group(2)}{{ ::emu::CheckLaunchBounds({first}, __FILE__, __LINE__);'
s = re.sub(r'__launch_bounds__\(((?:[^()]|\([^()]*\))*)\)(\s*[\w:]+\s*\([^{;]*?\)\s*)\{', bounds, s)
assert '__launch_bounds__' not in s, 'unhandled __launch_bounds__'
# every kernel starts with KernelEntry (its parameters are copied by then)
n_kernels = 0
def entry(m):
    global n_kernels
    n_kernels += 1
    return m.group(1) + '{ ::emu::KernelEntry();'
s = re.sub(r'(__global__\s+void\s+[\w:]+\s*\([^{;]*?\)\s*)\{', entry, s)
n_ext = 0
def ext(m):
    global n_ext
    n_ext += 1
    return f'{m.group(2)}* {m.group(3)} = static_cast<{m.group(2)}*>(::emu::DynShared());'
s = re.sub(r'extern\s+__shared__\s+(__align__\(\d+\)\s+)?([\w:]+(?:\s+[\w:]+)*?)\s+(\w+)\[\];', ext, s)
n_sh = 0
def shared(m):  # __shared__ [__align__(n)] T name[dims]...; (no dims: a scalar)
    global n_sh
    n_sh += 1
    align = m.group(2) or '1'
    return f'auto& {m.group(4)} = ::emu::Shared<{m.group(3)}{m.group(5)}>(__COUNTER__, {align});'
s = re.sub(r'__shared__\s+(__align__\((\d+)\)\s+)?([\w:<>, ]+?)\s+(\w+)((?:\[[^\]]+\])*);', shared, s)
assert '__shared__' not in s, 'unhandled __shared__'
assert '<<<' not in s
out = f'#line 1 "{src}"\n' + s
import os
# Make, unlike Ninja, does not create an output's folder before running its command.
os.makedirs(os.path.dirname(os.path.abspath(dst)), exist_ok=True)
if not os.path.exists(dst) or open(dst).read() != out:
    open(dst, 'w').write(out)
print(f'{src}: {n_launch} launches, {n_sh} shared, {n_ext} extern shared, {n_lb} launch bounds')
